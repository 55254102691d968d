//! Problems found in a scenario file: where (a path such as `steps[2].then`, the step id,
//! a line and column for syntax errors) and what, in a plain sentence.

use std::fmt;

use serde::Serialize;

/// How serious a problem is: errors block activation and make `validate` exit 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The scenario cannot run as written.
    Error,
    /// The scenario runs, but probably not as meant.
    Warning,
}

/// One problem, located.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// Error or warning.
    pub severity: Severity,
    /// Where in the document (`steps[2].then`); empty for the whole file.
    pub path: String,
    /// The id of the step concerned, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    /// Line (1-based), when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    /// Column (1-based), when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<usize>,
    /// What is wrong, in a plain sentence.
    pub message: String,
}

impl Problem {
    /// An error at `path`.
    pub fn error(path: impl Into<String>, message: impl Into<String>) -> Self {
        Problem {
            severity: Severity::Error,
            path: path.into(),
            step: None,
            line: None,
            column: None,
            message: message.into(),
        }
    }

    /// A warning at `path`.
    pub fn warning(path: impl Into<String>, message: impl Into<String>) -> Self {
        Problem {
            severity: Severity::Warning,
            ..Problem::error(path, message)
        }
    }

    /// The same problem, naming the step it concerns.
    pub fn in_step(mut self, step: &str) -> Self {
        if !step.is_empty() {
            self.step = Some(step.to_string());
        }
        self
    }

    /// The same problem, at a line and column.
    pub fn at(mut self, line: usize, column: usize) -> Self {
        self.line = Some(line);
        self.column = Some(column);
        self
    }

    /// True for errors.
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let label = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, "{label}: ")?;
        if let Some(line) = self.line {
            write!(f, "line {line}")?;
            if let Some(col) = self.column {
                write!(f, ", column {col}")?;
            }
            f.write_str(": ")?;
        }
        if !self.path.is_empty() {
            f.write_str(&self.path)?;
            if let Some(step) = &self.step {
                write!(f, " (step \"{step}\")")?;
            }
            f.write_str(": ")?;
        }
        f.write_str(&self.message)
    }
}
