//! What the model sees of rich outputs, through the real server and a real client: plotly
//! figures as one PNG each (kaleido with the machine's Chromium, confined like every kernel) or
//! a short summary without a browser; HTML, Markdown and a pandas Styler as readable text with
//! the original bundle kept; the names each cell bound, and `list_variables` at any cell.
//!
//! The PNG tests need a Chromium or Chrome on PATH (`.ci/run` installs Debian's
//! `chromium-headless-shell`); they fail, never skip, without one.

use std::path::Path;

use rmcp::model::CallToolResult;
use serde_json::{Value, json};

use super::mcp_client::{Server, data_dir, images, texts};

/// The base packages of these tests: one cached venv for all of them.
const PACKAGES: &str = "numpy,pandas,plotly,kaleido,jinja2";

/// A figure of a known size.
const FIGURE: &str = "import plotly.express as px\n\
                      fig = px.scatter(x=[1, 2, 3], y=[4, 1, 2.5], title='Hello')\n\
                      fig.update_layout(width=640, height=480, xaxis_title='time')";

/// Whether this machine is declared unable to confine kernels (as in `sandbox.rs`).
fn no_sandbox() -> bool {
    std::env::var_os("MCP_PYREPL_TEST_NO_SANDBOX").is_some_and(|value| value == "1")
}

/// A server with `flags`, its kernels confined at `--sandbox files` unless the machine is
/// declared unable to confine (`MCP_PYREPL_TEST_NO_SANDBOX=1`).
async fn start(data: &Path, flags: &[&str]) -> Server {
    start_at(data, if no_sandbox() { "off" } else { "files" }, flags).await
}

/// A server whose kernels are confined at `level`, with `flags`.
async fn start_at(data: &Path, level: &str, flags: &[&str]) -> Server {
    let flags: Vec<String> = flags.iter().map(|flag| flag.to_string()).collect();
    Server::start_with(data, PACKAGES, |command| {
        command.args(["--sandbox", level]).args(&flags);
    })
    .await
}

/// Width and height from a PNG's IHDR chunk, after checking the signature.
fn png_size(png: &[u8]) -> (u32, u32) {
    assert!(png.len() > 24 && png.starts_with(b"\x89PNG\r\n\x1a\n") && &png[12..16] == b"IHDR", "not a PNG");
    let number = |at: usize| u32::from_be_bytes(png[at..at + 4].try_into().unwrap());
    (number(16), number(20))
}

/// The names a run_code result reports, as (name, type, summary).
fn names_of(result: &CallToolResult) -> Vec<(String, String, String)> {
    let structured = result.structured_content.clone().expect("structured content");
    let names = structured["names"].as_array().unwrap_or_else(|| panic!("no names: {structured}")).clone();
    names
        .iter()
        .map(|n| {
            let field = |key: &str| n[key].as_str().unwrap_or_else(|| panic!("{key} of {n}")).to_owned();
            (field("name"), field("type"), field("summary"))
        })
        .collect()
}

/// The names alone.
fn bare_names(names: &[(String, String, String)]) -> Vec<&str> {
    names.iter().map(|(name, ..)| name.as_str()).collect()
}

#[tokio::test]
async fn a_plotly_figure_is_one_png_of_its_size_whether_shown_displayed_or_returned() {
    let (_guard, data) = data_dir();
    let server = start(&data, &[]).await;
    let created = server.call("create_repl", json!({})).await.structured_content.unwrap();
    assert_eq!(created["sandboxed"], !no_sandbox(), "the kernel renders confined: {created}");
    let session = created["session_id"].as_str().unwrap().to_owned();
    let (_, figure) = server.ok(&session, FIGURE, None).await;
    for code in ["fig.show()", "fig", "display(fig)", "fig.show(); print('after')"] {
        let result = server.run(&session, code, Some(&figure)).await;
        let text = texts(&result).join("\n");
        assert_ne!(result.is_error, Some(true), "{code}: {text}");
        let pngs = images(&result);
        assert_eq!(pngs.len(), 1, "{code}: one image, got {} and {text}", pngs.len());
        let printed = if code.contains("print") { 2 } else { 1 };
        assert_eq!(texts(&result).len(), printed, "{code}: nothing but the image and the cell id: {text}");
        assert_eq!(png_size(&pngs[0]), (640, 480), "{code}");
        assert!(
            !text.contains("Figure({") && !text.contains("<html") && !text.contains("Traceback"),
            "{text}"
        );
    }
    // A size given to show() wins over the layout's; plotly's own to_image finds the browser too.
    let sized = server.run(&session, "fig.show(width=300, height=200)", Some(&figure)).await;
    assert_eq!(png_size(&images(&sized)[0]), (300, 200));
    let (length, _) = server
        .ok(&session, "png = fig.to_image(format='png')\nprint(png[:4] == b'\\x89PNG')", Some(&figure))
        .await;
    assert_eq!(length, "True\n");
}

#[tokio::test]
async fn a_kernel_without_network_renders_plotly_too() {
    if no_sandbox() {
        return;
    }
    let (_guard, data) = data_dir();
    let server = start_at(&data, "strict", &[]).await;
    let session = server.create_repl().await;
    let (_, figure) = server.ok(&session, FIGURE, None).await;
    let shown = server.run(&session, "fig", Some(&figure)).await;
    assert_ne!(shown.is_error, Some(true), "{:?}", texts(&shown));
    assert_eq!(images(&shown).iter().map(|png| png_size(png)).collect::<Vec<_>>(), [(640, 480)]);
}

#[tokio::test]
async fn without_a_browser_a_plotly_figure_is_a_short_summary_saying_how_to_get_images() {
    let (_guard, data) = data_dir();
    let server = start(&data, &["--chromium", "/nonexistent/chromium"]).await;
    let session = server.create_repl().await;
    let (_, figure) = server.ok(&session, FIGURE, None).await;
    for code in ["fig.show()", "fig", "display(fig)"] {
        let result = server.run(&session, code, Some(&figure)).await;
        let text = texts(&result);
        assert_ne!(result.is_error, Some(true), "{code}: {text:?}");
        assert!(images(&result).is_empty(), "{code}");
        assert_eq!(text.len(), 2, "{code}: the summary and the cell id: {text:?}");
        let summary = &text[0];
        for expected in
            ["plotly figure 'Hello', 640×480 px", "trace 1: scatter x[3] y[3]", "xaxis 'time': 1 to 3"]
        {
            assert!(summary.contains(expected), "{code}: {expected:?} not in {summary}");
        }
        assert!(summary.contains("yaxis") && summary.contains("1 to 4"), "{summary}");
        assert!(summary.contains("--chromium PATH"), "no way to enable images: {summary}");
        assert!(summary.len() < 600, "{summary}");
        assert!(
            !summary.contains("Traceback") && !summary.contains("<html") && !summary.contains("Figure({")
        );
    }
}

#[tokio::test]
async fn html_markdown_and_a_styler_come_back_as_text_and_keep_their_bundle() {
    let (_guard, data) = data_dir();
    let server = start(&data, &["--chromium", ""]).await;
    let session = server.create_repl().await;
    let table = "from IPython.display import HTML, Markdown, display\n\
                 display(HTML('<table><tr><th>city</th><th>people</th></tr>\
                 <tr><td>Lyon</td><td>522250</td></tr><tr><td>Nantes</td><td>320732</td></tr></table>'))\n\
                 display(Markdown('see [the docs](https://example.org/docs)'))\n\
                 HTML('<p>read <a href=\"https://example.org/a\">this</a></p>')";
    let result = server.run(&session, table, None).await;
    let text = texts(&result);
    assert_ne!(result.is_error, Some(true), "{text:?}");
    assert_eq!(text.len(), 4, "{text:?}");
    let lyon = text[0].lines().find(|line| line.contains("Lyon")).unwrap_or_else(|| panic!("{}", text[0]));
    assert!(lyon.contains("522250"), "a row keeps its cells: {}", text[0]);
    assert!(text[0].contains("Nantes") && text[0].contains("320732") && text[0].contains("people"));
    assert_eq!(text[1], "see [the docs](https://example.org/docs)");
    assert_eq!(text[2], "read [this](https://example.org/a)");
    assert!(!text.iter().any(|t| t.contains(" object>")), "{text:?}");

    let styler = "import pandas as pd\n\
                  pd.DataFrame({'fruit': ['apple', 'pear'], 'kg': [1.25, 3.5]}).style.format(precision=1)";
    let (styled, styled_cell) = server.ok(&session, styler, None).await;
    assert!(styled.contains("apple") && styled.contains("pear") && styled.contains("3.5"), "{styled}");
    assert!(!styled.contains("Styler at 0x") && !styled.contains("<style"), "{styled}");

    // The cell keeps the original HTML: the notebook has it.
    let exported =
        server.call("export_notebook", json!({"session_id": session, "cell_id": styled_cell})).await;
    let path = exported.structured_content.unwrap()["notebook"].as_str().unwrap().to_owned();
    let notebook: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let html = &notebook["cells"][0]["outputs"][0]["data"]["text/html"];
    let html = html.as_str().map(str::to_owned).unwrap_or_else(|| html.to_string());
    assert!(html.contains("<table") && html.contains("apple"), "{html}");
}

#[tokio::test]
async fn each_cell_reports_the_names_it_bound_and_list_variables_shows_any_cells_namespace() {
    let (_guard, data) = data_dir();
    let server = start(&data, &["--chromium", ""]).await;
    let session = server.create_repl().await;

    let first = "import pandas as pd\nimport numpy as np\n\
                 df = pd.DataFrame({'a': range(5), 'b': 1.5})\nn = 3\n_hidden = 1\ngrid = np.zeros((2, 3))";
    let a = server.run(&session, first, None).await;
    let names = names_of(&a);
    assert_eq!(bare_names(&names), ["df", "n", "grid"], "{names:?}");
    assert_eq!(names[0].1, "pandas.DataFrame");
    assert!(names[0].2.starts_with("shape 5×2; a int64, b float64"), "{names:?}");
    assert_eq!((names[1].1.as_str(), names[1].2.as_str()), ("int", "3"));
    assert_eq!(names[2].2, "shape 2×3, dtype float64");
    let a = texts(&a).last().unwrap().clone();

    // Rebinding is reported, mutating in place is not; summaries stay short.
    let second = "n = 4\ndf.loc[0, 'a'] = 9\nwords = ['x' * 300] * 1000";
    let b = server.run(&session, second, Some(&a)).await;
    let names = names_of(&b);
    assert_eq!(bare_names(&names), ["n", "words"], "{names:?}");
    assert!(names[1].2.starts_with("len 1000: ['xxx") && names[1].2.chars().count() <= 120, "{names:?}");
    let b = texts(&b).last().unwrap().clone();

    // A branch from `a` reports its own names, not those of the cells replayed for it.
    let branch = server.run(&session, "k = n + 1", Some(&a)).await;
    assert_eq!(bare_names(&names_of(&branch)), ["k"]);
    // A cell that raised reports what it bound before the error.
    let failed = server.run(&session, "k = 1\nraise ValueError('no')\nlate = 2", Some(&a)).await;
    assert_eq!(failed.is_error, Some(true));
    assert_eq!(bare_names(&names_of(&failed)), ["k"]);

    // list_variables: the namespace at each cell, without a new cell.
    let listed = |cell: String| {
        let server = &server;
        let session = session.clone();
        async move {
            let result = server.call("list_variables", json!({"session_id": session, "cell_id": cell})).await;
            assert_ne!(result.is_error, Some(true), "{:?}", texts(&result));
            let structured = result.structured_content.clone().unwrap();
            let names: Vec<(String, String)> = structured["names"]
                .as_array()
                .unwrap()
                .iter()
                .map(|n| (n["name"].as_str().unwrap().to_owned(), n["summary"].as_str().unwrap().to_owned()))
                .collect();
            (names, texts(&result)[0].clone())
        }
    };
    let (at_b, text) = listed(b.clone()).await;
    let at_b_names: Vec<&str> = at_b.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(at_b_names, ["df", "n", "grid", "words"], "{at_b:?}");
    assert!(text.contains("n: int = 4"), "{text}");
    let (at_a, _) = listed(a.clone()).await;
    assert_eq!(at_a.iter().map(|(name, _)| name.as_str()).collect::<Vec<_>>(), ["df", "n", "grid"]);
    assert_eq!(at_a[1].1, "3", "the older cell's value");
    let cells = server.call("list_cells", json!({"session_id": session})).await.structured_content.unwrap();
    assert_eq!(cells["cells"].as_array().unwrap().len(), 4, "list_variables made no cell");
    // The kernel that answered still holds that cell's state.
    let (value, _) = server.ok(&session, "print(n, 'words' in dir())", Some(&a)).await;
    assert_eq!(value, "3 False\n");
}
