//! The names a cell bound, and the whole user namespace of a kernel, as the model sees them:
//! `{name, type, summary}` each, read through an execute request's `user_expressions` (the
//! startup file defines the helper they call), so they cost no round trip of their own.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The key of the one user expression we send.
const KEY: &str = "mcp_pyrepl_names";

/// One name of the user namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Name {
    /// The variable's name.
    pub name: String,
    /// Its type (`int`, `pandas.DataFrame`).
    #[serde(rename = "type")]
    pub type_name: String,
    /// At most 120 characters: shape and dtype for arrays and frames, length for containers,
    /// the start of the repr otherwise.
    pub summary: String,
}

/// Names of a namespace, as many as the kernel listed, and how many more it left out.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Names {
    /// The names, in the namespace's order.
    pub names: Vec<Name>,
    /// Names not listed to keep the reply small.
    #[serde(default)]
    pub omitted: usize,
}

/// The user expressions that list the names a cell bound or rebound.
pub(super) fn bound_by_cell() -> Map<String, Value> {
    expression("_mcp_pyrepl_names.names()")
}

/// The user expressions that list the whole user namespace.
pub(super) fn whole_namespace() -> Map<String, Value> {
    expression("_mcp_pyrepl_names.variables()")
}

fn expression(code: &str) -> Map<String, Value> {
    Map::from_iter([(KEY.to_owned(), Value::from(code))])
}

/// The names in the values of a reply's `user_expressions`; none when the code failed (the
/// kernel then evaluates nothing) or the kernel has no helper (one we did not start).
pub(super) fn parse(user_expressions: &Map<String, Value>) -> Names {
    let value = user_expressions.get(KEY);
    let listed = value
        .filter(|value| value.get("status").and_then(Value::as_str) == Some("ok"))
        .and_then(|value| value.pointer("/data/text~1plain")?.as_str())
        .and_then(|json| serde_json::from_str(json).ok());
    if listed.is_none() && value.is_some_and(|value| value.get("status").is_some()) {
        tracing::debug!(?value, "the kernel did not list its names");
    }
    listed.unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_listing_is_read_from_the_text_of_an_ok_value_and_anything_else_is_none() {
        let listing = r#"{"names": [{"name": "x", "type": "int", "summary": "1"}], "omitted": 2}"#;
        let ok = json!({ KEY: { "status": "ok", "data": { "text/plain": listing }, "metadata": {} } });
        let names = parse(ok.as_object().unwrap());
        assert_eq!(names.omitted, 2);
        assert_eq!(names.names, [Name { name: "x".into(), type_name: "int".into(), summary: "1".into() }]);
        let failed =
            json!({ KEY: { "status": "error", "ename": "NameError", "evalue": "", "traceback": [] } });
        assert_eq!(parse(failed.as_object().unwrap()), Names::default());
        assert_eq!(parse(&Map::new()), Names::default());
    }
}
