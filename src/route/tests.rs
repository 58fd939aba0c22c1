//! Subject templates: rendering, placeholders, filters and NATS wildcard rules.

use super::*;

struct Ev(&'static str, &'static str);
impl SubjectValues for Ev {
    fn subject_value(&self, field: SubjectField) -> &str {
        match field {
            SubjectField::AggregateType => self.0,
            SubjectField::EventType => self.1,
            SubjectField::Schema => "shop",
            SubjectField::Table => "outbox",
            _ => "x",
        }
    }
}

#[test]
fn renders_placeholders_with_event_values() {
    let t = SubjectTemplate::parse("outbox.{schema}.{aggregatetype}.{type}").unwrap();
    assert_eq!(
        t.render(&Ev("Order", "OrderPlaced")).unwrap(),
        "outbox.shop.Order.OrderPlaced"
    );
    assert_eq!(t.filter(), "outbox.*.*.*");
}

#[test]
fn placeholder_inside_a_token_makes_the_whole_token_a_wildcard() {
    let t = SubjectTemplate::parse("ev.agg-{aggregatetype}.all").unwrap();
    assert_eq!(t.render(&Ev("User", "t")).unwrap(), "ev.agg-User.all");
    assert_eq!(t.filter(), "ev.*.all");
}

#[test]
fn values_that_would_break_the_subject_are_rejected() {
    let t = SubjectTemplate::parse("outbox.event.{aggregatetype}").unwrap();
    for bad in ["", "a b", "a.b", "*", "a>", "tab\there"] {
        let err = t.render(&Ev(bad, "t")).unwrap_err();
        assert_eq!(err.field, "aggregatetype");
        assert_eq!(err.value, bad);
    }
}

struct WithColumns(Vec<Option<&'static str>>);
impl SubjectValues for WithColumns {
    fn subject_value(&self, field: SubjectField) -> &str {
        match field {
            SubjectField::AggregateType => "Order",
            _ => "x",
        }
    }
    fn column_value(&self, slot: usize) -> Option<&str> {
        self.0[slot]
    }
}

#[test]
fn any_column_can_be_a_placeholder_plain_or_with_the_column_prefix() {
    let t =
        SubjectTemplate::parse("outbox.{tenant}.{aggregatetype}.{column:Region}-{TENANT}").unwrap();
    let names: Vec<_> = t.columns().iter().map(|c| c.column.as_str()).collect();
    assert_eq!(names, ["tenant", "Region"], "each column once");
    assert_eq!(t.columns()[1].token, "{column:Region}");
    assert_eq!(t.filter(), "outbox.*.*.*");
    let subject = t
        .render(&WithColumns(vec![Some("acme"), Some("eu")]))
        .unwrap();
    assert_eq!(subject, "outbox.acme.Order.eu-acme");
    // `{column:type}` is the column named type, not the mapped event type field.
    let t = SubjectTemplate::parse("x.{column:type}").unwrap();
    assert_eq!(t.columns()[0].column, "type");
}

#[test]
fn a_column_value_that_is_no_subject_token_is_an_error_naming_the_column() {
    let t = SubjectTemplate::parse("outbox.{tenant}.{aggregatetype}").unwrap();
    for (bad, shown) in [(None, "NULL"), (Some("a.b"), "a.b"), (Some(""), "")] {
        let err = t.render(&WithColumns(vec![bad])).unwrap_err();
        assert_eq!(err.field, "column `tenant`");
        assert_eq!(err.value, shown);
    }
}

#[test]
fn malformed_templates_are_rejected() {
    for bad in [
        "",
        "a..b",
        ".a",
        "a.",
        "a.{no pe}",
        "a.{column:}",
        "a.{}",
        "a.{type",
        "a.type}",
        "a.*",
        "a.>",
        "a b",
    ] {
        assert!(
            SubjectTemplate::parse(bad).is_err(),
            "{bad} should be rejected"
        );
    }
}

#[test]
fn overlap_follows_nats_wildcard_rules() {
    assert!(subjects_overlap("a.*", "a.b"));
    assert!(subjects_overlap("a.>", "a.b.c"));
    assert!(subjects_overlap("*.b", "a.*"));
    assert!(!subjects_overlap("shop.*", "billing.*"));
    assert!(!subjects_overlap("a.*", "a.b.c"));
    assert!(!subjects_overlap("a.b", "a.c"));
}

#[test]
fn coverage_follows_nats_wildcard_rules() {
    assert!(subject_covers("outbox.>", "outbox.event.*"));
    assert!(subject_covers("outbox.event.*", "outbox.event.*"));
    assert!(subject_covers("outbox.*.*", "outbox.event.*"));
    assert!(subject_covers(">", "a.b"));
    assert!(!subject_covers("outbox.event.User", "outbox.event.*"));
    assert!(!subject_covers("outbox.event", "outbox.event.*"));
    assert!(!subject_covers("outbox.event.*", "outbox.event.*.x"));
    assert!(!subject_covers("other.>", "outbox.event.*"));
}
