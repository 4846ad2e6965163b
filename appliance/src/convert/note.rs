//! A remark of a conversion about its input, for the operator.

/// One remark about the input: its line (when it is about one) and what happened to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub line: Option<usize>,
    pub message: String,
}

impl std::fmt::Display for Note {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        match self.line {
            Some(line) => write!(f, "line {line}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}
