//! The wire codec on its own: sign + encode an `execute_request`, then decode + verify it.
//! Target (issue 5): at most 5 µs for the whole trip.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use mcp_pyrepl::jupyter::message::{Content, ExecuteRequest, Message};
use mcp_pyrepl::jupyter::wire::{Signer, decode, encode};

fn codec(c: &mut Criterion) {
    let signer = Signer::new(b"3f7c2f9e-5f4b-4b8e-9d1a-8f0e6c2b1a77");
    let request = Message::new(Content::ExecuteRequest(ExecuteRequest::new("x = 1 + 1")), "bench-session");
    let frames = encode(&request, &signer);

    c.bench_function("execute_request sign+encode+decode+verify", |b| {
        b.iter(|| decode(encode(black_box(&request), &signer), &signer).unwrap())
    });
    c.bench_function("execute_request sign+encode", |b| b.iter(|| encode(black_box(&request), &signer)));
    c.bench_function("execute_request decode+verify", |b| {
        b.iter(|| decode(black_box(frames.clone()), &signer).unwrap())
    });
}

criterion_group!(benches, codec);
criterion_main!(benches);
