//! What does not fit in a reply, and files in and out, through the built server over stdio with
//! real kernels: a large figure arrives scaled while its original reads back as a resource at
//! full size; `resources/list` lists it; `upload_file` gives the kernel a file it reads by its
//! relative path, `download_file` returns what the kernel wrote byte for byte; paths that leave
//! the working directory are refused and touch nothing; the directory survives restarts,
//! replays and resets. (The spilled output read over streamable HTTP is in `http.rs`; bad
//! resource URIs and reads during a running cell are in `in_process.rs`.)

use base64::Engine;
use rmcp::model::{CallToolResult, ContentBlock, ResourceContents};
use serde_json::json;

use super::common::within;
use super::mcp_client::{Server, data_dir, links, read_resource, resource_blob, texts};

/// The size of a PNG or JPEG.
fn size_of(bytes: &[u8]) -> (u32, u32) {
    image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .unwrap()
        .into_dimensions()
        .unwrap()
}

/// The decoded images of a result, with their MIME types.
fn images_of(result: &CallToolResult) -> Vec<(Vec<u8>, String)> {
    result
        .content
        .iter()
        .filter_map(ContentBlock::as_image)
        .map(|image| {
            (base64::engine::general_purpose::STANDARD.decode(&image.data).unwrap(), image.mime_type.clone())
        })
        .collect()
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[tokio::test]
async fn a_large_figure_arrives_scaled_and_its_original_reads_back_at_full_size() {
    let (_guard, data) = data_dir();
    let server = Server::start(&data).await;
    let session = server.create_repl().await;
    let code = "import matplotlib.pyplot as plt, numpy as np\n\
                fig = plt.figure(figsize=(40, 30), dpi=100)\n\
                x = np.linspace(0, 10, 2000)\n\
                plt.plot(x, np.sin(x)); plt.plot(x, np.cos(3 * x))\n\
                display_figure(fig, bbox_inches=None)";
    let result = server.run(&session, code, None).await;
    assert_ne!(result.is_error, Some(true), "{:?}", texts(&result));
    let images = images_of(&result);
    let [(sent, _mime)] = images.as_slice() else { panic!("one image expected: {:?}", texts(&result)) };
    let (width, height) = size_of(sent);
    assert!(width.max(height) <= 1568, "sent at {width}x{height}");
    assert!(
        width > height && (f64::from(width) / f64::from(height) - 4.0 / 3.0).abs() < 0.01,
        "{width}x{height}"
    );
    let budget = 60_000;
    let sent_base64: usize =
        result.content.iter().filter_map(ContentBlock::as_image).map(|i| i.data.len()).sum();
    assert!(sent_base64 <= budget, "{sent_base64} base64 bytes of images, over the default budget");
    assert!(texts(&result).iter().any(|t| t.contains("scaled from 4000x3000")), "{:?}", texts(&result));

    // The reply links the original; it reads back at full size, and resources/list has it.
    let links = links(&result);
    let [original] = links.as_slice() else { panic!("one link expected: {links:?}") };
    assert_eq!(original.mime_type.as_deref(), Some("image/png"));
    let read = read_resource(&server.service, &original.uri).await.expect("resources/read");
    let (bytes, mime) = resource_blob(&read);
    assert_eq!(mime.as_deref(), Some("image/png"));
    assert_eq!(size_of(&bytes), (4000, 3000));
    let listed = within(60, server.service.list_all_resources()).await.unwrap();
    assert!(listed.iter().any(|r| r.uri == original.uri), "{original:?} not in {listed:?}");

    // get_cell shows the same outputs the same way, linking the same original.
    let cell = texts(&result).last().unwrap().clone();
    let detail = server.call("get_cell", json!({"session_id": session, "cell_id": cell})).await;
    assert_eq!(super::mcp_client::links(&detail).first().map(|l| l.uri.clone()), Some(original.uri.clone()));
    assert!(images_of(&detail).iter().all(|(image, _)| size_of(image).0 <= 1568));

    // A small figure goes as it was made, with no link.
    let small =
        "fig = plt.figure(figsize=(4, 3), dpi=50)\nplt.plot([1, 2]); display_figure(fig, bbox_inches=None)";
    let result = server.run(&session, small, Some(&cell)).await;
    let images = images_of(&result);
    assert_eq!(
        images.iter().map(|(i, m)| (size_of(i), m.as_str())).collect::<Vec<_>>(),
        [((200, 150), "image/png")]
    );
    assert!(super::mcp_client::links(&result).is_empty());
}

#[tokio::test]
async fn files_go_in_and_out_of_the_working_directory_and_survive_restarts() {
    let (_guard, data) = data_dir();
    // One kernel per session and no snapshots, so running under an older cell restarts it and
    // replays.
    let server = Server::start_with(&data, "numpy,pandas,matplotlib", |command| {
        command
            .env("MCP_PYREPL_KERNELS_PER_SESSION", "1")
            .env("MCP_PYREPL_SNAPSHOTS_PER_SESSION", "0")
            .env("MCP_PYREPL_MAX_UPLOAD_BYTES", "100000");
    })
    .await;
    let session = server.create_repl().await;
    let upload =
        |path: &str, bytes: &[u8]| json!({"session_id": session, "path": path, "content_base64": b64(bytes)});

    // An uploaded CSV is read by pandas by its relative path.
    let csv = "city,people\nLyon,522\nNantes,320\n";
    let uploaded = server.call("upload_file", upload("data/cities.csv", csv.as_bytes())).await;
    assert_ne!(uploaded.is_error, Some(true), "{:?}", texts(&uploaded));
    let read = "import pandas as pd\ndf = pd.read_csv('data/cities.csv')\nprint(int(df.people.sum()))";
    let (out, first) = server.ok(&session, read, None).await;
    assert_eq!(out, "842\n");

    // Files the cell writes download byte for byte: binary as a blob, text as text, an image
    // as an image.
    let write = "import os\nos.makedirs('out', exist_ok=True)\n\
                 open('out/blob.bin', 'wb').write(bytes(range(256)) * 40)\n\
                 df.to_csv('out/cities.csv', index=False)\n\
                 import matplotlib.pyplot as plt\nplt.figure(figsize=(2, 1), dpi=50).savefig('out/plot.png')";
    let (_, wrote) = server.ok(&session, write, Some(&first)).await;
    let download = |path: &str| json!({"session_id": session, "path": path});
    let blob = server.call("download_file", download("out/blob.bin")).await;
    let [ContentBlock::Resource(embedded)] = blob.content.as_slice() else { panic!("{blob:?}") };
    let ResourceContents::BlobResourceContents { blob: encoded, mime_type, uri, .. } = &embedded.resource
    else {
        panic!("{embedded:?}")
    };
    let expected: Vec<u8> = (0..40).flat_map(|_| 0..=255u8).collect();
    assert_eq!(base64::engine::general_purpose::STANDARD.decode(encoded).unwrap(), expected);
    assert_eq!(mime_type.as_deref(), Some("application/octet-stream"));
    // The same file through resources/read.
    let (bytes, _) = resource_blob(&read_resource(&server.service, uri).await.expect("resources/read"));
    assert_eq!(bytes, expected);
    let text = server.call("download_file", download("out/cities.csv")).await;
    assert_eq!(texts(&text), [csv]);
    assert_eq!(text.structured_content.unwrap()["mime_type"], "text/csv");
    let png = server.call("download_file", download("out/plot.png")).await;
    assert_eq!(images_of(&png).iter().map(|(i, _)| size_of(i)).collect::<Vec<_>>(), [(100, 50)]);

    // Paths that leave the directory are refused, links the kernel made included, and nothing
    // outside is touched.
    let outside = data.join("outside.txt");
    std::fs::write(&outside, "untouched").unwrap();
    let links = format!(
        "import os\nos.symlink({:?}, 'leak')\nos.symlink({:?}, 'up')\nos.symlink('/etc', 'etc')",
        outside.to_str().unwrap(),
        data.to_str().unwrap()
    );
    server.ok(&session, &links, Some(&wrote)).await;
    for (path, expected) in [
        ("../x", "contains `..`"),
        ("/etc/passwd", "is absolute"),
        ("up/outside.txt", "`up` is a symbolic link"),
        ("etc/passwd", "`etc` is a symbolic link"),
        ("leak", "`leak` is a symbolic link"),
    ] {
        let result = server.call("download_file", download(path)).await;
        assert_eq!(result.is_error, Some(true), "{path}: {:?}", texts(&result));
        assert!(texts(&result)[0].contains(expected), "{path}: {:?}", texts(&result));
    }
    for (path, expected) in [
        ("../x", "contains `..`"),
        ("/tmp/x", "is absolute"),
        ("up/outside.txt", "`up` is a symbolic link"),
        ("up/new.txt", "`up` is a symbolic link"),
        ("etc/x", "`etc` is a symbolic link"),
    ] {
        let result = server.call("upload_file", upload(path, b"written")).await;
        assert_eq!(result.is_error, Some(true), "{path}: {:?}", texts(&result));
        assert!(texts(&result)[0].contains(expected), "{path}: {:?}", texts(&result));
    }
    assert_eq!(std::fs::read_to_string(&outside).unwrap(), "untouched");
    assert!(!data.join("new.txt").exists() && !data.join("sessions").join("x").exists());
    let session_dir = data.join("sessions").join(&session);
    assert!(!session_dir.join("x").exists());

    // An upload over the limit is refused, saying so and naming the setting.
    let refused = server.call("upload_file", upload("big.bin", &[7; 100_001])).await;
    assert_eq!(refused.is_error, Some(true));
    let message = &texts(&refused)[0];
    assert!(message.contains("100001 bytes") && message.contains("--max-upload-bytes"), "{message}");
    assert!(!session_dir.join("work/big.bin").exists());

    // A fresh kernel (a restart), a replay of the path and a reset keep the working directory.
    let check = "print(open('data/cities.csv').read() == open('out/cities.csv').read())";
    let (fresh, _) = server.ok(&session, check, None).await;
    assert_eq!(fresh, "True\n");
    let replayed = server.run(&session, check, Some(&first)).await;
    assert_eq!(texts(&replayed)[0], "True\n");
    assert_eq!(replayed.structured_content.unwrap()["replayed_cell_ids"], json!([first]));
    let reset = server.call("reset_repl", json!({"session_id": session})).await;
    assert_ne!(reset.is_error, Some(true));
    let (after_reset, _) = server.ok(&session, check, None).await;
    assert_eq!(after_reset, "True\n");
}
