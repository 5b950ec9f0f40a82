//! The value parser of every numeric setting: a number that must lie in a range.
//!
//! Owns the check and its message, which names the setting (its flag and its variable), the
//! value given and the range accepted. clap runs it on flags, `MCP_PYREPL_*` variables and
//! defaults alike while it reads the command line, so a bad value stops the program (exit code
//! 2) before anything starts. The ranges themselves belong to the settings that use them.

use std::ffi::OsStr;
use std::fmt;
use std::ops::{Bound, RangeBounds};
use std::str::FromStr;

/// A number type a setting can hold.
pub trait Number: FromStr + PartialOrd + fmt::Display + Copy + Send + Sync + 'static {
    /// What the text must be, as an error message says it.
    const KIND: &'static str;
}

impl Number for f64 {
    const KIND: &'static str = "a number";
}

macro_rules! whole_numbers {
    ($($int:ty),*) => {
        $(impl Number for $int {
            const KIND: &'static str = "a whole number";
        })*
    };
}

whole_numbers!(u16, u32, u64, usize);

/// A clap value parser that accepts a number only within a range.
///
/// NaN lies in no range, and infinity (`inf`, or `1e400`, which parses as infinity) in none
/// with a finite end.
#[derive(Debug, Clone, Copy)]
pub struct InRange<T> {
    start: Bound<T>,
    end: Bound<T>,
}

impl<T: Number> InRange<T> {
    /// Accepts the numbers of `range`: `0.0..=3600.0`, `16..`, or
    /// `(Bound::Excluded(0.0), Bound::Included(86400.0))` for a range open at its start.
    pub fn new(range: impl RangeBounds<T>) -> Self {
        InRange { start: range.start_bound().cloned(), end: range.end_bound().cloned() }
    }

    /// `text` as a number of the range, if it is one.
    fn accept(&self, text: &OsStr) -> Option<T> {
        text.to_str()?.parse().ok().filter(|number| self.contains(number))
    }
}

impl<T> RangeBounds<T> for InRange<T> {
    fn start_bound(&self) -> Bound<&T> {
        self.start.as_ref()
    }

    fn end_bound(&self) -> Bound<&T> {
        self.end.as_ref()
    }
}

/// The range in words: `from 0 to 3600`, `greater than 0 and at most 86400`, `at least 1`.
impl<T: fmt::Display> fmt::Display for InRange<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let (Bound::Included(start), Bound::Included(end)) = (&self.start, &self.end) {
            return write!(f, "from {start} to {end}");
        }
        match &self.start {
            Bound::Included(start) => write!(f, "at least {start}")?,
            Bound::Excluded(start) => write!(f, "greater than {start}")?,
            Bound::Unbounded => {}
        }
        if !matches!((&self.start, &self.end), (Bound::Unbounded, _) | (_, Bound::Unbounded)) {
            f.write_str(" and ")?;
        }
        match &self.end {
            Bound::Included(end) => write!(f, "at most {end}"),
            Bound::Excluded(end) => write!(f, "less than {end}"),
            Bound::Unbounded => Ok(()),
        }
    }
}

impl<T: Number> clap::builder::TypedValueParser for InRange<T> {
    type Value = T;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &OsStr,
    ) -> Result<T, clap::Error> {
        self.accept(value).ok_or_else(|| {
            let message = format!(
                "invalid value `{}` for {}: expected {} {self}",
                value.to_string_lossy(),
                arg.map_or_else(|| "a value".to_owned(), setting),
                T::KIND,
            );
            cmd.clone().error(clap::error::ErrorKind::ValueValidation, message)
        })
    }
}

/// How a user names `arg`: `` `--cell-timeout` (or `MCP_PYREPL_CELL_TIMEOUT`) ``.
fn setting(arg: &clap::Arg) -> String {
    let flag = arg.get_long().map_or_else(|| arg.get_id().to_string(), |long| format!("--{long}"));
    match arg.get_env() {
        Some(variable) => format!("`{flag}` (or `{}`)", variable.to_string_lossy()),
        None => format!("`{flag}`"),
    }
}

#[cfg(test)]
mod tests {
    use clap::builder::TypedValueParser;

    use super::*;

    /// What `range` makes of `value` given as `--cell-timeout`: the number, or the error text.
    fn parse<T: Number>(range: InRange<T>, value: &str) -> Result<T, String> {
        let arg = clap::Arg::new("cell_timeout").long("cell-timeout").env("MCP_PYREPL_CELL_TIMEOUT");
        range
            .parse_ref(&clap::Command::new("mcp-pyrepl"), Some(&arg), OsStr::new(value))
            .map_err(|e| e.to_string())
    }

    fn seconds() -> InRange<f64> {
        InRange::new((Bound::Excluded(0.0), Bound::Included(86400.0)))
    }

    #[test]
    fn numbers_in_the_range_are_accepted_up_to_its_bounds() {
        assert_eq!(parse(seconds(), "300"), Ok(300.0));
        assert_eq!(parse(seconds(), "0.001"), Ok(0.001));
        assert_eq!(parse(seconds(), "86400"), Ok(86400.0));
        assert_eq!(parse(seconds(), "8.64e4"), Ok(86400.0));
        assert_eq!(parse(InRange::new(0.0..=3600.0), "0"), Ok(0.0));
        assert_eq!(parse(InRange::new(1024..=1usize << 30), "1024"), Ok(1024));
        assert_eq!(parse(InRange::new(1024..=1usize << 30), "1073741824"), Ok(1 << 30));
        assert_eq!(parse(InRange::new(16u64..), "18446744073709551615"), Ok(u64::MAX));
    }

    #[test]
    fn the_error_names_the_setting_the_value_and_the_range() {
        for bad in ["-1", "0", "86400.5", "NaN", "nan", "inf", "-inf", "1e400", "", "5s", "five"] {
            let error = parse(seconds(), bad).unwrap_err();
            assert!(
                error.contains(&format!(
                    "invalid value `{bad}` for `--cell-timeout` (or `MCP_PYREPL_CELL_TIMEOUT`): \
                     expected a number greater than 0 and at most 86400\n"
                )),
                "{bad}: {error}"
            );
        }
        for bad in ["-1", "1023", "1073741825", "1.5", "inf", "1e6", "lots"] {
            let error = parse(InRange::new(1024..=1usize << 30), bad).unwrap_err();
            assert!(
                error.contains(&format!("`{bad}` for `--cell-timeout` (or `MCP_PYREPL_CELL_TIMEOUT`): expected a whole number from 1024 to 1073741824\n")),
                "{bad}: {error}"
            );
        }
        let error = parse(InRange::new(16u64..), "15").unwrap_err();
        assert!(error.contains("expected a whole number at least 16\n"), "{error}");
        let error = parse(InRange::new((Bound::Included(0.0), Bound::Excluded(1.0))), "1").unwrap_err();
        assert!(error.contains("expected a number at least 0 and less than 1\n"), "{error}");
    }

    #[test]
    fn a_setting_without_a_variable_is_named_by_its_flag() {
        let arg = clap::Arg::new("port").long("port");
        let error = InRange::new(1..=9u16)
            .parse_ref(&clap::Command::new("mcp-pyrepl"), Some(&arg), OsStr::new("10"))
            .unwrap_err();
        assert!(error.to_string().contains("for `--port`: expected"), "{error}");
    }
}
