//! Subject templates: where an outbox event is published.
//!
//! A template such as `outbox.event.{aggregatetype}` is parsed once at start. Placeholders name
//! fields of the event: `{id}`, `{aggregatetype}`, `{aggregateid}`, `{type}`, `{schema}`,
//! `{table}` (the mapped columns, whatever their names), or any column of the outbox row:
//! `{column:NAME}`, or plain `{NAME}` when NAME is not one of the fields. Column placeholders
//! are checked against the table's real columns when its table map is resolved (and by
//! preflight), not here: the template does not know the table. Each rendered value must be a
//! single valid NATS subject token (non-empty, no whitespace, no `.`, `*` or `>`; a NULL
//! column is no token either); a value that is not is bad input and rendering fails with
//! [`SubjectError`] rather than publishing to a subject nobody expects.
//!
//! [`SubjectTemplate::filter`] gives the wildcard subject that covers everything the template
//! can produce; the publisher checks that the stream's subjects cover it.

use std::fmt;

/// A field of an outbox event that a subject template can refer to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubjectField {
    Id,
    AggregateType,
    AggregateId,
    EventType,
    Schema,
    Table,
}

impl SubjectField {
    const ALL: [(&'static str, SubjectField); 6] = [
        ("id", SubjectField::Id),
        ("aggregatetype", SubjectField::AggregateType),
        ("aggregateid", SubjectField::AggregateId),
        ("type", SubjectField::EventType),
        ("schema", SubjectField::Schema),
        ("table", SubjectField::Table),
    ];

    fn from_name(name: &str) -> Option<Self> {
        Self::ALL.iter().find(|(n, _)| *n == name).map(|(_, f)| *f)
    }

    pub fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, f)| *f == self)
            .map(|(n, _)| *n)
            .unwrap_or("?")
    }
}

/// The values a template can use, borrowed from the event being routed.
pub trait SubjectValues {
    fn subject_value(&self, field: SubjectField) -> &str;

    /// The value of the template's column placeholder number `slot` (the order of
    /// [`SubjectTemplate::columns`]); `None` when the column is NULL (or unknown).
    fn column_value(&self, slot: usize) -> Option<&str> {
        let _ = slot;
        None
    }
}

/// Prefix of a placeholder that names a column explicitly: `{column:tenant}`.
pub const COLUMN_PREFIX: &str = "column:";

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Field(SubjectField),
    /// Index into [`SubjectTemplate::columns`].
    Column(usize),
}

/// A column placeholder of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnPlaceholder {
    /// The column's name, as written (matched case-insensitively, as MySQL does).
    pub column: String,
    /// The placeholder as written in the template, e.g. `{tenant}`, for error messages.
    pub token: String,
}

/// A parsed subject template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubjectTemplate {
    source: String,
    parts: Vec<Part>,
    columns: Vec<ColumnPlaceholder>,
}

/// Why a subject template is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid subject template {template:?}: {reason}")]
pub struct TemplateError {
    template: String,
    reason: String,
}

/// Why an event's value cannot be used in its subject.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} value {value:?} cannot be used in subject template {template:?}: {reason}")]
pub struct SubjectError {
    /// The field (`aggregatetype`) or column (``column `tenant` ``) the value came from.
    pub field: String,
    pub value: String,
    pub template: String,
    pub reason: &'static str,
}

impl SubjectTemplate {
    pub fn parse(template: &str) -> Result<Self, TemplateError> {
        let fail = |reason: String| TemplateError {
            template: template.to_owned(),
            reason,
        };
        if template.is_empty() {
            return Err(fail("it is empty".into()));
        }
        let mut parts = Vec::new();
        let mut columns: Vec<ColumnPlaceholder> = Vec::new();
        let mut rest = template;
        while !rest.is_empty() {
            match rest.find('{') {
                Some(0) => {
                    let close = rest
                        .find('}')
                        .ok_or_else(|| fail("'{' without a closing '}'".into()))?;
                    let name = &rest[1..close];
                    parts.push(match placeholder(name).map_err(fail)? {
                        Placeholder::Field(field) => Part::Field(field),
                        Placeholder::Column(column) => {
                            let slot = match columns
                                .iter()
                                .position(|c| c.column.eq_ignore_ascii_case(column))
                            {
                                Some(slot) => slot,
                                None => {
                                    columns.push(ColumnPlaceholder {
                                        column: column.to_owned(),
                                        token: format!("{{{name}}}"),
                                    });
                                    columns.len() - 1
                                }
                            };
                            Part::Column(slot)
                        }
                    });
                    rest = &rest[close + 1..];
                }
                found => {
                    let end = found.unwrap_or(rest.len());
                    let literal = &rest[..end];
                    if literal.contains('}') {
                        return Err(fail("'}' without an opening '{'".into()));
                    }
                    parts.push(Part::Literal(literal.to_owned()));
                    rest = &rest[end..];
                }
            }
        }
        let parsed = Self {
            source: template.to_owned(),
            parts,
            columns,
        };
        for part in &parsed.parts {
            if let Part::Literal(lit) = part
                && (lit.contains(['*', '>']) || lit.chars().any(is_forbidden_char))
            {
                return Err(fail(format!("{lit:?} contains whitespace, '*' or '>'")));
            }
        }
        if parsed.filter().split('.').any(str::is_empty) {
            return Err(fail(
                "it has an empty token (leading, trailing or double '.')".into(),
            ));
        }
        Ok(parsed)
    }

    /// The template as written in the config.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// The column placeholders, each column once, in the order of their first use: slot `i`
    /// of [`SubjectValues::column_value`] is `columns()[i]`.
    pub fn columns(&self) -> &[ColumnPlaceholder] {
        &self.columns
    }

    /// The subject filter covering every subject this template can render: each token that
    /// contains a placeholder becomes `*`.
    pub fn filter(&self) -> String {
        let mut rendered = String::new();
        let mut token_has_field = false;
        let mut tokens = Vec::new();
        let mut flush = |rendered: &mut String, has_field: &mut bool| {
            tokens.push(if *has_field {
                "*".to_owned()
            } else {
                std::mem::take(rendered)
            });
            rendered.clear();
            *has_field = false;
        };
        for part in &self.parts {
            match part {
                Part::Field(_) | Part::Column(_) => token_has_field = true,
                Part::Literal(lit) => {
                    let mut pieces = lit.split('.');
                    if let Some(first) = pieces.next() {
                        rendered.push_str(first);
                    }
                    for piece in pieces {
                        flush(&mut rendered, &mut token_has_field);
                        rendered.push_str(piece);
                    }
                }
            }
        }
        flush(&mut rendered, &mut token_has_field);
        tokens.join(".")
    }

    /// Renders the subject for one event, validating every substituted value.
    pub fn render(&self, values: &impl SubjectValues) -> Result<String, SubjectError> {
        let mut subject = String::with_capacity(self.source.len() + 32);
        for part in &self.parts {
            match part {
                Part::Literal(lit) => subject.push_str(lit),
                Part::Field(field) => {
                    let value = values.subject_value(*field);
                    if let Err(reason) = check_token(value) {
                        return Err(SubjectError {
                            field: field.name().to_owned(),
                            value: value.to_owned(),
                            template: self.source.clone(),
                            reason,
                        });
                    }
                    subject.push_str(value);
                }
                Part::Column(slot) => {
                    let value = values.column_value(*slot);
                    let checked = value.ok_or("the column is NULL").and_then(check_token);
                    if let Err(reason) = checked {
                        return Err(SubjectError {
                            field: format!("column `{}`", self.columns[*slot].column),
                            value: value.unwrap_or("NULL").to_owned(),
                            template: self.source.clone(),
                            reason,
                        });
                    }
                    subject.push_str(value.unwrap_or_default());
                }
            }
        }
        Ok(subject)
    }
}

impl fmt::Display for SubjectTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

enum Placeholder<'a> {
    Field(SubjectField),
    Column(&'a str),
}

/// What the text between `{` and `}` names: `column:NAME` a column; a field's name that
/// field; any other identifier a column of that name.
fn placeholder(name: &str) -> Result<Placeholder<'_>, String> {
    let known = || {
        let fields: Vec<_> = SubjectField::ALL.iter().map(|(n, _)| *n).collect();
        format!(
            "fields: {}; or any column of the table as {{NAME}} or {{{COLUMN_PREFIX}NAME}}",
            fields.join(", ")
        )
    };
    if let Some(column) = name.strip_prefix(COLUMN_PREFIX) {
        if column.is_empty() || column.contains('{') {
            return Err(format!(
                "placeholder {{{name}}} names no column; {}",
                known()
            ));
        }
        return Ok(Placeholder::Column(column));
    }
    if let Some(field) = SubjectField::from_name(name) {
        return Ok(Placeholder::Field(field));
    }
    let identifier = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || c == '_' || c == '$');
    match identifier {
        true => Ok(Placeholder::Column(name)),
        false => Err(format!("unknown placeholder {{{name}}}; {}", known())),
    }
}

fn is_forbidden_char(c: char) -> bool {
    c.is_whitespace() || c.is_control()
}

/// Checks that `value` can stand as (part of) one subject token.
fn check_token(value: &str) -> Result<(), &'static str> {
    if value.is_empty() {
        return Err("it is empty");
    }
    if value.contains('.') {
        return Err("it contains '.', which would split the subject");
    }
    if value.contains(['*', '>']) {
        return Err("it contains a wildcard ('*' or '>')");
    }
    if value.chars().any(is_forbidden_char) {
        return Err("it contains whitespace or a control character");
    }
    Ok(())
}

/// Whether the stream subject `pattern` matches every subject matched by `filter`.
pub fn subject_covers(pattern: &str, filter: &str) -> bool {
    let mut p = pattern.split('.');
    let mut f = filter.split('.');
    loop {
        match (p.next(), f.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(ft)) if ft != ">" => {}
            (Some(pt), Some(ft)) if pt == ft && pt != "*" => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Whether some subject matches both filters (JetStream refuses streams whose subjects
/// overlap).
pub fn subjects_overlap(a: &str, b: &str) -> bool {
    let mut a = a.split('.');
    let mut b = b.split('.');
    loop {
        match (a.next(), b.next()) {
            (Some(">"), Some(_)) | (Some(_), Some(">")) => return true,
            (Some(x), Some(y)) if x == "*" || y == "*" || x == y => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests;
