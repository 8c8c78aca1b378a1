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

/// Parses JSON text into a `Document`, with the number rules of [`json_to_document`].
///
/// Straight from the text, without a `serde_json::Value` tree in between: tool schemas and
/// tool results cross this on every model call (Jane's load profile, BENCHMARKS.md).
pub fn json_text_to_document(text: &str) -> Result<Document, serde_json::Error> {
    use serde::Deserialize;
    let mut de = serde_json::Deserializer::from_str(text);
    let doc = DocumentDe::deserialize(&mut de)?.0;
    de.end()?;
    Ok(doc)
}

/// Renders a `Document` as JSON text (a non-finite float as `null`, as [`document_to_json`]).
pub fn document_to_json_text(doc: &Document) -> String {
    // Writing to a Vec cannot fail, and the serializer emits only valid UTF-8.
    serde_json::to_string(&DocumentSer(doc)).unwrap_or_else(|_| document_to_json(doc).to_string())
}

/// A `Document` built directly by a serde visitor.
struct DocumentDe(Document);

impl<'de> serde::Deserialize<'de> for DocumentDe {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(DocumentVisitor).map(DocumentDe)
    }
}

struct DocumentVisitor;

impl<'de> serde::de::Visitor<'de> for DocumentVisitor {
    type Value = Document;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E>(self) -> Result<Document, E> {
        Ok(Document::Null)
    }
    fn visit_bool<E>(self, b: bool) -> Result<Document, E> {
        Ok(Document::Bool(b))
    }
    fn visit_u64<E>(self, u: u64) -> Result<Document, E> {
        Ok(Document::Number(Number::PosInt(u)))
    }
    fn visit_i64<E>(self, i: i64) -> Result<Document, E> {
        // serde_json hands non-negative integers to `visit_u64`; keep the rule anyway.
        Ok(Document::Number(u64::try_from(i).map_or(Number::NegInt(i), Number::PosInt)))
    }
    fn visit_f64<E>(self, f: f64) -> Result<Document, E> {
        Ok(Document::Number(Number::Float(f)))
    }
    fn visit_str<E>(self, s: &str) -> Result<Document, E> {
        Ok(Document::String(s.to_owned()))
    }
    fn visit_string<E>(self, s: String) -> Result<Document, E> {
        Ok(Document::String(s))
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Document, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
        while let Some(DocumentDe(d)) = seq.next_element()? {
            items.push(d);
        }
        Ok(Document::Array(items))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Document, A::Error> {
        let mut fields = HashMap::with_capacity(map.size_hint().unwrap_or(0).min(1024));
        // A repeated key keeps its last value, as `serde_json::Value` does.
        while let Some((k, DocumentDe(v))) = map.next_entry::<String, DocumentDe>()? {
            fields.insert(k, v);
        }
        Ok(Document::Object(fields))
    }
}

/// Serializes a borrowed `Document` as JSON.
struct DocumentSer<'a>(&'a Document);

impl serde::Serialize for DocumentSer<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{SerializeMap, SerializeSeq};
        match self.0 {
            Document::Null => serializer.serialize_unit(),
            Document::Bool(b) => serializer.serialize_bool(*b),
            Document::Number(Number::PosInt(u)) => serializer.serialize_u64(*u),
            Document::Number(Number::NegInt(i)) => serializer.serialize_i64(*i),
            Document::Number(Number::Float(f)) if f.is_finite() => serializer.serialize_f64(*f),
            Document::Number(Number::Float(_)) => serializer.serialize_unit(),
            Document::String(s) => serializer.serialize_str(s),
            Document::Array(items) => {
                let mut seq = serializer.serialize_seq(Some(items.len()))?;
                for d in items {
                    seq.serialize_element(&DocumentSer(d))?;
                }
                seq.end()
            }
            Document::Object(fields) => {
                let mut map = serializer.serialize_map(Some(fields.len()))?;
                for (k, v) in fields {
                    map.serialize_entry(k, &DocumentSer(v))?;
                }
                map.end()
            }
        }
    }
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

    #[test]
    fn text_conversions_follow_the_same_rules_and_refuse_what_is_not_one_json_value() {
        let text = r#"{"a":1,"b":-2,"c":2.5,"d":null,"e":[{"f":18446744073709551615}],"g":1e400,"a":3}"#;
        let direct = json_text_to_document(text);
        // 1e400 overflows f64: serde_json refuses it either way.
        assert!(direct.is_err());
        let text = r#"{"a":1,"b":-2,"c":2.5,"d":null,"e":[{"f":18446744073709551615}],"s":"\u00e9\"","a":3}"#;
        let via_value = json_to_document(&serde_json::from_str::<Value>(text).unwrap());
        assert_eq!(json_text_to_document(text).unwrap(), via_value);
        for bad in ["", "{", "1 2", "{\"a\":1}x", "[1,]"] {
            assert!(json_text_to_document(bad).is_err(), "{bad:?}");
        }
        let nan = Document::Array(vec![Document::Number(Number::Float(f64::INFINITY)), Document::Bool(true)]);
        assert_eq!(document_to_json_text(&nan), "[null,true]");
    }
}
