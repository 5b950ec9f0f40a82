//! A kernel we launch: execute, outputs, images, interrupt, restart through the local provider,
//! shutdown, death.

use std::time::Duration;

use mcp_pyrepl::kernel::{Death, ExecutionStatus, Kernel, KernelError, LaunchSpec, Output, StreamName};

use mcp_pyrepl::provider::{KernelProvider, LocalProvider, ProviderContext};

use super::common::{default_venv, group_alive, launch_in, pngs, run, stdout, stdout_of, within};

const PNG_MAGIC: &[u8] = b"\x89PNG\r\n\x1a\n";

#[tokio::test]
async fn outputs_arrive_in_order_with_every_kind() {
    let dir = tempfile::tempdir().unwrap();
    let kernel = launch_in(dir.path()).await;
    assert_eq!(kernel.info().implementation, "ipython");

    let execution = run(
        &kernel,
        // ipykernel buffers stdout and stderr apart; flushing makes the order across them defined.
        "import sys\nprint('a'); print('b', flush=True)\nprint('oops', file=sys.stderr, flush=True)\nprint('c')\n\
         from IPython.display import display, HTML\ndisplay(HTML('<b>x</b>'))\n6 * 7",
    )
    .await;
    assert_eq!(execution.status, ExecutionStatus::Ok);
    let kinds: Vec<String> = execution
        .outputs
        .iter()
        .map(|o| match o {
            Output::Stream { name, text } => format!("{}:{text}", name.as_str()),
            Output::DisplayData { data, .. } => format!("display:{}", data["text/html"].as_str().unwrap()),
            Output::ExecuteResult { .. } => format!("result:{}", o.text_plain().unwrap()),
            Output::Error { .. } | Output::Omitted { .. } => format!("{o:?}"),
        })
        .collect();
    assert_eq!(kinds, ["stdout:a\nb\n", "stderr:oops\n", "stdout:c\n", "display:<b>x</b>", "result:42"]);
    let count = execution.execution_count.unwrap();
    assert!(
        matches!(execution.outputs[4], Output::ExecuteResult { execution_count, .. } if execution_count == count)
    );
    kernel.shutdown().await;
}

#[tokio::test]
async fn state_persists_and_errors_carry_a_traceback() {
    let dir = tempfile::tempdir().unwrap();
    let kernel = launch_in(dir.path()).await;
    assert_eq!(stdout_of(&kernel, "x = 41").await, "");
    let result = run(&kernel, "x + 1").await;
    assert_eq!(result.outputs[0].text_plain(), Some("42"));

    let failed = run(&kernel, "def f():\n    raise ValueError('bad value')\nf()").await;
    assert_eq!(failed.status, ExecutionStatus::Error);
    let Some(Output::Error { ename, evalue, .. }) = failed.outputs.last() else { panic!("{failed:?}") };
    assert_eq!((ename.as_str(), evalue.as_str()), ("ValueError", "bad value"));
    let traceback = failed.outputs.last().unwrap().traceback_text().unwrap();
    assert!(traceback.contains("raise ValueError('bad value')"), "{traceback}");
    assert!(!traceback.contains('\x1b'), "ANSI codes left in {traceback:?}");

    // The kernel goes on after an error.
    assert_eq!(stdout_of(&kernel, "print(x)").await, "41\n");
    kernel.shutdown().await;
}

#[tokio::test]
async fn input_fails_fast_instead_of_hanging() {
    let dir = tempfile::tempdir().unwrap();
    let kernel = launch_in(dir.path()).await;
    let execution = run(&kernel, "input('name? ')").await;
    assert_eq!(execution.status, ExecutionStatus::Error);
    assert!(
        matches!(&execution.outputs[0], Output::Error { ename, .. } if ename == "StdinNotImplementedError")
    );
    kernel.shutdown().await;
}

#[tokio::test]
async fn concurrent_executes_each_get_their_own_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let kernel = launch_in(dir.path()).await;
    let (a, b, c) = within(60, async {
        tokio::join!(
            kernel.execute("print('one')"),
            kernel.execute("print('two')"),
            kernel.execute("print('three')")
        )
    })
    .await;
    assert_eq!(stdout(&a.unwrap()), "one\n");
    assert_eq!(stdout(&b.unwrap()), "two\n");
    assert_eq!(stdout(&c.unwrap()), "three\n");
    kernel.shutdown().await;
}

#[tokio::test]
async fn every_way_of_showing_a_figure_gives_one_png() {
    let dir = tempfile::tempdir().unwrap();
    let kernel = launch_in(dir.path()).await;
    stdout_of(&kernel, "import matplotlib.pyplot as plt\nimport numpy as np\nx = np.linspace(0, 10, 50)")
        .await;
    for code in [
        "fig, ax = plt.subplots()\nax.plot(x, np.sin(x))\ndisplay_figure(fig)",
        "plt.plot(x, np.cos(x))\nplt.show()",
        "fig, ax = plt.subplots()\nax.scatter(x, x)\nfig",
        // A figure created and left open is shown once at the end of the cell (the inline backend).
        "plt.figure()\nplt.plot(x, x)\nNone",
    ] {
        let execution = run(&kernel, code).await;
        assert_eq!(execution.status, ExecutionStatus::Ok, "{code}: {:?}", execution.outputs);
        let images = pngs(&execution);
        assert_eq!(images.len(), 1, "{code} gave {} images", images.len());
        assert!(images[0].starts_with(PNG_MAGIC));
    }
    // display_figure works for a figure made without pyplot, too.
    let execution = run(
        &kernel,
        "from matplotlib.figure import Figure\nf = Figure()\nf.add_subplot().plot([1, 2])\ndisplay_figure(f)",
    )
    .await;
    assert_eq!(pngs(&execution).len(), 1, "{:?}", execution.outputs);
    kernel.shutdown().await;
}

#[tokio::test]
async fn interrupt_stops_a_busy_loop_and_keeps_variables() {
    let dir = tempfile::tempdir().unwrap();
    let kernel = launch_in(dir.path()).await;
    stdout_of(&kernel, "kept = 'still here'").await;
    let (execution, ()) = within(60, async {
        tokio::join!(kernel.execute("print('started', flush=True)\nwhile True: pass"), async {
            // Give the loop time to start; an interrupt before it would hit the idle kernel.
            tokio::time::sleep(Duration::from_millis(1500)).await;
            kernel.interrupt().await.unwrap();
        })
    })
    .await;
    let execution = execution.unwrap();
    assert_eq!(execution.status, ExecutionStatus::Error);
    assert!(
        execution
            .outputs
            .iter()
            .any(|o| matches!(o, Output::Error { ename, .. } if ename == "KeyboardInterrupt")),
        "{:?}",
        execution.outputs
    );
    assert_eq!(stdout_of(&kernel, "print(kept)").await, "still here\n");
    kernel.shutdown().await;
}

#[tokio::test]
async fn the_local_provider_restarts_by_discarding_and_starting_fresh() {
    let dir = tempfile::tempdir().unwrap();
    let settings = mcp_pyrepl::config::Settings::with_data_dir(dir.path());
    let provider = LocalProvider::new(ProviderContext {
        session_dir: dir.path().to_owned(),
        venv_dir: default_venv().await.dir().to_owned(),
        kernel_dir: dir.path().join("kernel"),
        work_dir: dir.path().join("work"),
        limits: settings.limits,
        gateway: settings.gateway,
    });
    assert!(provider.can_restart());
    assert_eq!(provider.working_dir(), Some(dir.path().join("work").as_path()));
    let kernel = within(90, provider.start()).await.unwrap();
    stdout_of(&kernel, "x = 1\nopen('kept.txt', 'w').write('kept')").await;
    let old_pid = kernel.pid().unwrap();
    within(30, provider.discard(kernel)).await;
    assert!(!group_alive(old_pid), "the old kernel is still running");
    let kernel = within(90, provider.start()).await.unwrap();
    assert_ne!(kernel.pid().unwrap(), old_pid);
    let execution = run(&kernel, "x").await;
    assert!(matches!(&execution.outputs[0], Output::Error { ename, .. } if ename == "NameError"));
    assert_eq!(stdout_of(&kernel, "print('fresh')").await, "fresh\n");
    // The kernel works in the working directory, and a restart keeps what it holds.
    let cwd = stdout_of(&kernel, "import os; print(os.getcwd()); print(open('kept.txt').read())").await;
    assert_eq!(cwd, format!("{}\nkept\n", dir.path().join("work").canonicalize().unwrap().display()));
    // Only the new kernel's connection file is left in the directory.
    let connection_files = std::fs::read_dir(dir.path().join("kernel"))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().ends_with(".json"))
        .count();
    assert_eq!(connection_files, 1);
    within(30, provider.stop(kernel)).await;
}

#[tokio::test]
async fn shutdown_leaves_no_process_of_the_group() {
    let dir = tempfile::tempdir().unwrap();
    let kernel = launch_in(dir.path()).await;
    let pid = kernel.pid().unwrap();
    // A child of the kernel, in its process group, must go too.
    let child =
        stdout_of(&kernel, "import subprocess\np = subprocess.Popen(['sleep', '300'])\nprint(p.pid)").await;
    let child: i32 = child.trim().parse().unwrap();
    within(30, kernel.shutdown()).await;
    assert!(!group_alive(pid), "processes of the kernel's group survived shutdown");
    assert!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(child), None).is_err(),
        "the kernel's child survived"
    );
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".json") || name.contains('-'))
        .collect();
    assert!(leftovers.is_empty(), "connection file or sockets left: {leftovers:?}");
}

#[tokio::test]
async fn a_kernel_that_exits_mid_cell_is_reported_not_waited_for() {
    let dir = tempfile::tempdir().unwrap();
    let kernel = launch_in(dir.path()).await;
    let execution =
        run(&kernel, "print('before', flush=True)\nimport os, time\ntime.sleep(0.2)\nos._exit(3)").await;
    assert_eq!(execution.status, ExecutionStatus::Died(Death::Exited { code: 3 }));
    assert_eq!(stdout(&execution), "before\n", "output printed before the exit is kept");
    assert!(!kernel.is_alive());
    // Further requests fail at once with the cause.
    let error = within(5, kernel.execute("1")).await.unwrap_err();
    assert!(error.to_string().contains("exited with code 3"), "{error}");
}

#[tokio::test]
async fn a_kernel_killed_by_a_signal_names_the_signal() {
    let dir = tempfile::tempdir().unwrap();
    let kernel = launch_in(dir.path()).await;
    let pid = kernel.pid().unwrap();
    let (execution, ()) = within(60, async {
        tokio::join!(kernel.execute("import time\ntime.sleep(300)"), async {
            tokio::time::sleep(Duration::from_millis(500)).await;
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL)
                .unwrap();
        })
    })
    .await;
    let status = execution.unwrap().status;
    assert_eq!(status, ExecutionStatus::Died(Death::Signalled { signal: 9 }));
    let ExecutionStatus::Died(death) = status else { unreachable!() };
    assert_eq!(death.to_string(), "was killed by signal 9 (SIGKILL)");
}

#[tokio::test]
async fn a_python_without_ipykernel_fails_with_the_kernel_log() {
    let dir = tempfile::tempdir().unwrap();
    let venv = dir.path().join("bare");
    // A venv with nothing installed: the kernel cannot even import.
    let status = std::process::Command::new("python3")
        .args(["-m", "venv", "--without-pip"])
        .arg(&venv)
        .status()
        .unwrap();
    assert!(status.success());
    let spec = LaunchSpec::new(venv.join("bin/python"), dir.path().join("k"));
    let error = match within(60, Kernel::launch(spec)).await {
        Ok(_) => panic!("a kernel started without ipykernel"),
        Err(error) => error,
    };
    assert!(matches!(error, KernelError::StartFailed { .. }), "{error:?}");
    let text = error.to_string();
    assert!(text.contains("No module named ipykernel_launcher"), "{text}");
    assert!(text.contains("exited with code 1"), "{text}");
}

#[tokio::test]
async fn streams_of_one_name_are_coalesced_across_many_writes() {
    // 500 flushed writes: fewer than the 1000 messages a kernel's iopub queues for a slow reader
    // before it drops them, so a loaded machine cannot lose any.
    let dir = tempfile::tempdir().unwrap();
    let kernel = launch_in(dir.path()).await;
    let execution =
        run(&kernel, "import sys\nfor i in range(500):\n    sys.stdout.write(f'{i},'); sys.stdout.flush()")
            .await;
    let expected: String = (0..500).map(|i| format!("{i},")).collect();
    assert_eq!(execution.outputs.len(), 1);
    assert!(
        matches!(&execution.outputs[0], Output::Stream { name: StreamName::Stdout, text } if *text == expected)
    );
    kernel.shutdown().await;
}
