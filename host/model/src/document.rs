//! JSON ↔ [`aws_smithy_types::Document`], losslessly for everything JSON can express.

use std::collections::HashMap;

use aws_smithy_types::{Document, Number};
use serde_json::Value;

/// Converts JSON to a smithy `Document`: non-negative integers become `PosInt`, negative ones
/// `NegInt` and everything else `Float`, which is how the SDK itself decodes JSON documents.
pub fn json_to_document(value: &Value) -> Document {
    match value {
        Value::Null => Document::Null,
        Value::Bool(b) => Document::Bool(*b),
        Value::Number(n) => Document::Number(if let Some(u) = n.as_u64() {
            Number::PosInt(u)
        } else if let Some(i) = n.as_i64() {
            Number::NegInt(i)
        } else {
            // serde_json (without arbitrary_precision) holds every other number as a finite f64.
            Number::Float(n.as_f64().unwrap_or_default())
        }),
        Value::String(s) => Document::String(s.clone()),
        Value::Array(a) => Document::Array(a.iter().map(json_to_document).collect()),
        Value::Object(o) => Document::Object(
            o.iter().map(|(k, v)| (k.clone(), json_to_document(v))).collect::<HashMap<_, _>>(),
        ),
    }
}

/// Converts a smithy `Document` to JSON. A non-finite float (which JSON cannot express and
/// Bedrock never sends) becomes `null` rather than failing the whole response.
pub fn document_to_json(doc: &Document) -> Value {
    match doc {
        Document::Null => Value::Null,
        Document::Bool(b) => Value::Bool(*b),
        Document::Number(Number::PosInt(u)) => Value::from(*u),
        Document::Number(Number::NegInt(i)) => Value::from(*i),
        Document::Number(Number::Float(f)) => {
            serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number)
        }
        Document::String(s) => Value::String(s.clone()),
        Document::Array(a) => Value::Array(a.iter().map(document_to_json).collect()),
        Document::Object(o) => {
            Value::Object(o.iter().map(|(k, v)| (k.clone(), document_to_json(v))).collect())
        }
    }
}

/// Parses JSON text into a `Document`.
pub fn json_text_to_document(text: &str) -> Result<Document, serde_json::Error> {
    serde_json::from_str::<Value>(text).map(|v| json_to_document(&v))
}

/// Renders a `Document` as JSON text.
pub fn document_to_json_text(doc: &Document) -> String {
    document_to_json(doc).to_string()
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use proptest::prelude::*;

    /// Arbitrary JSON: every number shape (u64, negative i64, floats), nesting, null.
    pub(crate) fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<u64>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
            ".{0,12}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map(".{0,8}", inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn json_document_round_trip(v in arb_json()) {
            let d = json_to_document(&v);
            prop_assert_eq!(&document_to_json(&d), &v);
            // and through text, as the runtime passes it
            let t = document_to_json_text(&json_text_to_document(&v.to_string()).unwrap());
            prop_assert_eq!(serde_json::from_str::<Value>(&t).unwrap(), v);
        }
    }

    #[test]
    fn number_shapes() {
        let v: Value =
            serde_json::from_str(r#"{"a":1,"b":-2,"c":2.5,"d":null,"e":[{"f":18446744073709551615}]}"#)
                .unwrap();
        let d = json_to_document(&v);
        let Document::Object(o) = &d else { panic!("object") };
        assert_eq!(o["a"], Document::Number(Number::PosInt(1)));
        assert_eq!(o["b"], Document::Number(Number::NegInt(-2)));
        assert_eq!(o["c"], Document::Number(Number::Float(2.5)));
        assert_eq!(o["d"], Document::Null);
        assert_eq!(document_to_json(&d), v);
        assert_eq!(document_to_json(&Document::Number(Number::Float(f64::NAN))), Value::Null);
    }
}
