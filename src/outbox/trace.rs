//! W3C Trace Context from outbox columns: a `traceparent` / `tracestate` column pair, or
//! Debezium's `tracingspancontext` column (Java Properties text with `traceparent=…` and
//! `tracestate=…` lines), becomes the message's `traceparent` / `tracestate` headers.
//!
//! Values are validated as <https://www.w3.org/TR/trace-context/> defines them: a
//! traceparent is `version-traceid-parentid-flags` in lowercase hex, version `ff` invalid,
//! neither id all zeros; a tracestate is at most 32 `key=value` members. An invalid value is a
//! reason for a bad row (the caller applies the table's `on_bad_row`); NULL means no header.

/// Header names, as the W3C specification spells them.
pub const TRACEPARENT: &str = "traceparent";
pub const TRACESTATE: &str = "tracestate";

/// A row's trace context, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    pub traceparent: String,
    pub tracestate: Option<String>,
}

/// The trace context from a traceparent and a tracestate value (either may be NULL). A
/// tracestate without a traceparent means nothing (W3C: it is ignored), so it gives none.
pub fn from_columns(
    traceparent: Option<String>,
    tracestate: Option<String>,
) -> Result<Option<TraceContext>, String> {
    let Some(traceparent) = traceparent else {
        return Ok(None);
    };
    validate_traceparent(&traceparent)?;
    let tracestate = tracestate.filter(|s| !s.trim().is_empty());
    if let Some(state) = &tracestate {
        validate_tracestate(state)?;
    }
    Ok(Some(TraceContext {
        traceparent,
        tracestate,
    }))
}

/// The trace context in Debezium's `tracingspancontext` text (Java Properties, as
/// OpenTelemetry's propagator writes it through `Properties.store`: `#` comment lines,
/// `key=value` or `key: value`, `\:` and `\=` escapes).
pub fn from_span_context(text: &str) -> Result<Option<TraceContext>, String> {
    let mut traceparent = None;
    let mut tracestate = None;
    for (key, value) in crate::properties::parse(text) {
        match key.as_str() {
            TRACEPARENT => traceparent = Some(value),
            TRACESTATE => tracestate = Some(value),
            _ => {}
        }
    }
    from_columns(traceparent, tracestate)
        .map_err(|e| format!("{e} (in the span context's properties)"))
}

/// Checks a traceparent: `00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>` (later
/// versions may append `-…`), lowercase hex only, version `ff` and all-zero ids invalid.
pub fn validate_traceparent(value: &str) -> Result<(), String> {
    let fail = |why: &str| {
        Err(format!(
            "traceparent {value:?} is not a W3C traceparent (version-traceid-parentid-flags in lowercase hex): {why}"
        ))
    };
    let parts: Vec<&str> = value.split('-').collect();
    if parts.len() < 4 {
        return fail("it has fewer than 4 '-'-separated fields");
    }
    let lower_hex = |s: &str, len: usize| {
        s.len() == len
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let (version, trace_id, parent_id, flags) = (parts[0], parts[1], parts[2], parts[3]);
    if !lower_hex(version, 2) {
        return fail("the version is not 2 lowercase hex digits");
    }
    if version == "ff" {
        return fail("version ff is forbidden");
    }
    if version == "00" && parts.len() != 4 {
        return fail("version 00 has exactly 4 fields");
    }
    if !lower_hex(trace_id, 32) {
        return fail("the trace id is not 32 lowercase hex digits");
    }
    if trace_id.bytes().all(|b| b == b'0') {
        return fail("the trace id is all zeros");
    }
    if !lower_hex(parent_id, 16) {
        return fail("the parent id is not 16 lowercase hex digits");
    }
    if parent_id.bytes().all(|b| b == b'0') {
        return fail("the parent id is all zeros");
    }
    if !lower_hex(flags, 2) {
        return fail("the flags are not 2 lowercase hex digits");
    }
    Ok(())
}

/// The most list members a tracestate may have.
pub const TRACESTATE_MAX_MEMBERS: usize = 32;

/// Checks a tracestate: comma-separated `key=value` members (empty ones allowed), at most 32,
/// keys `[a-z0-9][a-z0-9_*/@-]*` of at most 256 characters (a tenant form `t@v` included),
/// values of printable ASCII without `,` and `=`, at most 256 characters, not ending in a
/// space.
pub fn validate_tracestate(value: &str) -> Result<(), String> {
    let fail = |why: String| {
        Err(format!(
            "tracestate {value:?} is not a W3C tracestate: {why}"
        ))
    };
    let members: Vec<&str> = value
        .split(',')
        .map(|m| m.trim_matches([' ', '\t']))
        .filter(|m| !m.is_empty())
        .collect();
    if members.len() > TRACESTATE_MAX_MEMBERS {
        return fail(format!(
            "{} members, at most {TRACESTATE_MAX_MEMBERS}",
            members.len()
        ));
    }
    let mut seen = std::collections::HashSet::new();
    for member in members {
        let Some((key, val)) = member.split_once('=') else {
            return fail(format!("member {member:?} is not key=value"));
        };
        let key_ok = tracestate_key(key) && seen.insert(key);
        if !key_ok {
            return fail(format!(
                "key {key:?} is not a valid tracestate key, or appears twice"
            ));
        }
        let val_ok = !val.is_empty()
            && val.len() <= 256
            && val
                .bytes()
                .all(|b| (0x20..=0x7e).contains(&b) && b != b',' && b != b'=')
            && !val.ends_with(' ');
        if !val_ok {
            return fail(format!(
                "the value of {key:?} is not a valid tracestate value"
            ));
        }
    }
    Ok(())
}

/// A W3C tracestate key: `simple-key` (a lowercase letter, then up to 255 of lowercase
/// letters, digits and `_-*/`) or `tenant@system` (a tenant of a lowercase letter or digit
/// and up to 240 more, a system of a lowercase letter and up to 13 more).
fn tracestate_key(key: &str) -> bool {
    let rest_ok = |s: &str, max: usize| {
        s.len() <= max
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-*/".contains(&b))
    };
    match key.split_once('@') {
        None => {
            key.bytes().next().is_some_and(|b| b.is_ascii_lowercase()) && rest_ok(&key[1..], 255)
        }
        Some((tenant, system)) => {
            tenant
                .bytes()
                .next()
                .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
                && rest_ok(&tenant[1..], 240)
                && system
                    .bytes()
                    .next()
                    .is_some_and(|b| b.is_ascii_lowercase())
                && rest_ok(&system[1..], 13)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn the_specifications_example_and_later_versions_are_valid() {
        assert_eq!(validate_traceparent(VALID), Ok(()));
        assert_eq!(
            validate_traceparent("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what"),
            Ok(()),
            "a later version may add fields"
        );
        assert_eq!(
            validate_tracestate("rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"),
            Ok(())
        );
        assert_eq!(validate_tracestate("tenant@vendor=x, ,a=b"), Ok(()));
    }

    #[test]
    fn invalid_traceparents_are_refused_saying_why() {
        for (bad, why) in [
            ("", "fewer than 4"),
            (
                "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
                "trace id",
            ),
            (
                "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
                "all zeros",
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
                "parent id is all zeros",
            ),
            (
                "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                "ff",
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
                "trace id",
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
                "flags",
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
                "exactly 4",
            ),
            (
                "0-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                "version",
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba9g2b7-01",
                "parent id",
            ),
        ] {
            let err = validate_traceparent(bad).unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn invalid_tracestates_are_refused() {
        let many = (0..33)
            .map(|i| format!("k{i}=v"))
            .collect::<Vec<_>>()
            .join(",");
        for bad in [
            "novalue",
            "Upper=x",
            "a=b=c",
            "a=",
            "=b",
            many.as_str(),
            "a=x\u{7f}",
            "1a=x",
            "a@b@c=x",
            "t@systemidtoolong=x",
            "a=1,a=2",
        ] {
            assert!(validate_tracestate(bad).is_err(), "{bad}");
        }
        for good in [
            "rojo=00f067aa0ba902b7",
            "1tenant@vendor=x,congo=t61rcWkgMzE",
        ] {
            assert!(validate_tracestate(good).is_ok(), "{good}");
        }
    }

    #[test]
    fn null_traceparent_means_no_context_even_with_a_tracestate() {
        assert_eq!(from_columns(None, Some("a=b".into())), Ok(None));
        let ctx = from_columns(Some(VALID.into()), Some(" ".into()))
            .unwrap()
            .unwrap();
        assert_eq!(ctx.tracestate, None, "a blank tracestate is no header");
    }

    #[test]
    fn debeziums_span_context_properties_give_the_trace_context() {
        let text = format!(
            "#Mon Jan 01 00:00:00 UTC 2024\ntraceparent={VALID}\r\ntracestate = rojo\\=x,congo=y\n"
        );
        let ctx = from_span_context(&text).unwrap().unwrap();
        assert_eq!(ctx.traceparent, VALID);
        assert_eq!(ctx.tracestate.as_deref(), Some("rojo=x,congo=y"));
        let colon = from_span_context(&format!("traceparent: {VALID}"))
            .unwrap()
            .unwrap();
        assert_eq!(colon.traceparent, VALID);
        assert_eq!(from_span_context("# nothing\nother=1\n"), Ok(None));
        let err = from_span_context("traceparent=00-zz\n").unwrap_err();
        assert!(err.contains("span context"), "{err}");
    }
}
