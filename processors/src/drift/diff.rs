//! The classified diff of two MCP tool lists.
//!
//! [`diff_tools`] takes two canonical tool lists (each tool an MCP `tools/list` object,
//! sorted by name, top-level `_meta`/`ttlMs`/`cacheScope` removed — the prober's
//! `canonical_tools`) and returns every change, each with a [`ChangeKind`] whose
//! [`ChangeClass`] is fixed.
//!
//! # What the classes mean
//!
//! The classes are judged from the side of a client calling the tool:
//!
//! * **Breaking** — a call that was valid before may be rejected now, or a consumer of the
//!   tool's structured output may no longer find what it read. Also every change this
//!   module cannot prove harmless (see "conservative fallbacks").
//! * **Additive** — every call valid before is still valid; new things are possible.
//! * **Cosmetic** — the set of valid calls is unchanged (descriptions, titles, annotation
//!   hints, defaults, examples, icons).
//!
//! # Identity of tools
//!
//! Tools are matched by `name`. A tool whose `name` is not a string is identified by its
//! canonical JSON (object keys sorted, numbers as doubles, as in RFC 8785 up to string
//! escaping), so it can only be added or removed, never "changed". Duplicate names (the
//! hash tolerates them) are matched by first taking out the copies identical on both
//! sides, then pairing the rest in canonical order; leftovers are added or removed.
//!
//! # Input schema rules
//!
//! The `inputSchema` is walked recursively: `properties` of objects (path `a.b`), array
//! `items` (path `a.items`), `anyOf`/`allOf`/`oneOf` branches of equal count, position by
//! position (path `a.anyOf[0]`), and `$defs`/`definitions` (path `$defs.Name`). Paths are
//! relative to the input schema's root; `None` is the tool itself or the root schema.
//! Property names containing dots are not escaped.
//!
//! * `type` is compared as a set (a string is a one-element set; absent means "any").
//!   Removing a type is [`ChangeKind::ParamTypeChanged`] (breaking); only adding types
//!   (e.g. `"string"` → `["string", "null"]`, `"integer"` → `"number"`, dropping `type`)
//!   is [`ChangeKind::ParamTypeWidened`] (additive). `integer` counts as covered by
//!   `number`.
//! * A schema without `type` whose `anyOf` branches are all bare `{"type": …}` objects is
//!   read as the union of those types first, so Pydantic's `Optional[str]`
//!   (`anyOf: [{type: string}, {type: null}]`) compares equal to `type: [string, null]`.
//! * `enum` is compared as a set of JSON values (numbers compared as doubles).
//!   Introducing an `enum` is [`ChangeKind::ConstraintTightened`], dropping it
//!   [`ChangeKind::ConstraintRelaxed`].
//! * `const`: a new or changed value is [`ChangeKind::ConstChanged`] (breaking); a dropped
//!   `const` only relaxes and is [`ChangeKind::ConstraintRelaxed`].
//! * `required` comes from the parent object's `required` array. A property that appears
//!   is required or optional according to the new `required`; a property that stays and
//!   changes status is made required (breaking) or made optional (additive).
//! * Numeric bounds (`minimum`, `maxLength`, `minItems`, …), `uniqueItems` and
//!   `additionalProperties: false` are tightened (breaking) or relaxed (additive) by
//!   direction; a bound added counts as tightened, a bound removed as relaxed.
//! * `description` → [`ChangeKind::DescriptionChanged`], `title` →
//!   [`ChangeKind::TitleChanged`], `default` → [`ChangeKind::DefaultChanged`], and
//!   `examples`, `$comment`, `deprecated`, `readOnly`, `writeOnly`, `$schema`, `$id`,
//!   `x-*` → [`ChangeKind::MetadataChanged`]: all cosmetic, because they do not change
//!   which calls validate. (A changed `default` can change behaviour for callers that
//!   omit the argument; it is still reported, but does not make the drift breaking.)
//!
//! # Conservative fallbacks
//!
//! Everything else — `pattern`, `format`, `multipleOf`, `$ref`, `not`, `if`/`then`/`else`,
//! `prefixItems`, `patternProperties`, branch lists of different lengths, schemas that are
//! not objects, `properties` that is not a map, `required` that is not a list of strings —
//! is [`ChangeKind::SchemaChanged`], which is **breaking**: the operator cannot show that
//! existing calls still validate, and a false "breaking" costs a chat message (P3) while a
//! false "additive" hides a broken integration. For the same reason, inside `oneOf`
//! branches a change that would be additive is reported as `SchemaChanged` (widening one
//! branch can make a value match two branches, which `oneOf` rejects). Unknown top-level
//! tool fields (e.g. `execution`) are [`ChangeKind::ToolFieldChanged`], also breaking.
//!
//! # Output schema
//!
//! `outputSchema` describes what the server returns, so the direction flips: the client is
//! the consumer. It is walked like the input schema, with paths prefixed `outputSchema`
//! (`outputSchema.temperature`), and then:
//!
//! * a property added → [`ChangeKind::OutputPropertyAdded`] (additive: consumers ignore
//!   what they do not read); a property removed → [`ChangeKind::OutputPropertyRemoved`]
//!   (breaking: consumers may read it);
//! * cosmetic kinds stay cosmetic; `$defs` additions and removals keep their kinds;
//! * every other change (types, enums, required, bounds, …) →
//!   [`ChangeKind::OutputSchemaChanged`], breaking. Narrowing an output is in fact safe,
//!   but telling a narrowing from a widening per keyword in reverse is not worth the
//!   risk of getting it wrong; keep it simple and conservative.
//! * a whole `outputSchema` appearing is [`ChangeKind::OutputSchemaAdded`] (additive), one
//!   disappearing [`ChangeKind::OutputSchemaRemoved`] (breaking).
//!
//! # Order
//!
//! Changes are sorted by tool, then path (`None` first), then kind (in declaration order
//! of [`ChangeKind`]), then detail, so the same two lists always give the same list.
//!
//! The diff never panics: any shape it does not understand becomes a `SchemaChanged` (or
//! `ToolFieldChanged`) change carrying both values in its detail.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// How much a change matters to a client. Ordered so that `Breaking` is the greatest
/// (`Cosmetic < Additive < Breaking`): the worst of several classes is their `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeClass {
    /// Which calls are valid is unchanged (descriptions, titles, hints).
    Cosmetic,
    /// Every call valid before is still valid; something new is possible.
    Additive,
    /// A call valid before may fail now, or an output consumer may break.
    Breaking,
}

/// What changed. Each kind has one fixed [`ChangeClass`] ([`ChangeKind::class`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    /// Breaking: a tool disappeared.
    ToolRemoved,
    /// Additive: a new tool.
    ToolAdded,
    /// Breaking: a new parameter that callers must send.
    RequiredParamAdded,
    /// Additive: a new parameter callers may omit.
    OptionalParamAdded,
    /// Breaking: a parameter disappeared (callers sending it may be rejected).
    ParamRemoved,
    /// Breaking: a type was removed from the parameter's accepted types.
    ParamTypeChanged,
    /// Additive: types were only added (e.g. `"null"`), or `type` was dropped.
    ParamTypeWidened,
    /// Breaking: an optional parameter became required.
    ParamMadeRequired,
    /// Additive: a required parameter became optional.
    ParamMadeOptional,
    /// Breaking: the enum lost values.
    EnumValuesRemoved,
    /// Additive: the enum gained values.
    EnumValuesAdded,
    /// Breaking: `const` was introduced or changed.
    ConstChanged,
    /// Breaking: a bound, `enum`, `uniqueItems`, `additionalProperties: false` or a
    /// combinator (`anyOf`, …) was introduced or made stricter.
    ConstraintTightened,
    /// Additive: such a constraint was dropped or loosened.
    ConstraintRelaxed,
    /// Breaking (conservative): a `$defs`/`definitions` entry was removed.
    DefinitionRemoved,
    /// Additive: a `$defs`/`definitions` entry was added.
    DefinitionAdded,
    /// Breaking (conservative): an input-schema change that cannot be classed precisely.
    SchemaChanged,
    /// Breaking: the tool no longer declares structured output.
    OutputSchemaRemoved,
    /// Additive: the tool now declares structured output.
    OutputSchemaAdded,
    /// Breaking: a property of the structured output disappeared.
    OutputPropertyRemoved,
    /// Additive: the structured output gained a property.
    OutputPropertyAdded,
    /// Breaking (conservative): any other change of the output schema.
    OutputSchemaChanged,
    /// Breaking (conservative): an unknown top-level tool field changed (e.g. `execution`).
    ToolFieldChanged,
    /// Cosmetic: a tool, parameter or schema description changed.
    DescriptionChanged,
    /// Cosmetic: a tool, parameter or schema title changed.
    TitleChanged,
    /// Cosmetic: a tool annotation (`readOnlyHint`, `destructiveHint`, …) changed.
    AnnotationsChanged,
    /// Cosmetic: a parameter's `default` changed.
    DefaultChanged,
    /// Cosmetic: other annotations (`examples`, `$comment`, `deprecated`, `icons`, `x-*`, …).
    MetadataChanged,
}

impl ChangeKind {
    /// The fixed class of this kind of change.
    pub const fn class(self) -> ChangeClass {
        use ChangeKind::*;
        match self {
            ToolRemoved
            | RequiredParamAdded
            | ParamRemoved
            | ParamTypeChanged
            | ParamMadeRequired
            | EnumValuesRemoved
            | ConstChanged
            | ConstraintTightened
            | DefinitionRemoved
            | SchemaChanged
            | OutputSchemaRemoved
            | OutputPropertyRemoved
            | OutputSchemaChanged
            | ToolFieldChanged => ChangeClass::Breaking,
            ToolAdded | OptionalParamAdded | ParamTypeWidened | ParamMadeOptional
            | EnumValuesAdded | ConstraintRelaxed | DefinitionAdded | OutputSchemaAdded
            | OutputPropertyAdded => ChangeClass::Additive,
            DescriptionChanged | TitleChanged | AnnotationsChanged | DefaultChanged
            | MetadataChanged => ChangeClass::Cosmetic,
        }
    }
}

/// One classified change between two tool lists.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Change {
    /// Always `kind.class()` for changes made by [`diff_tools`].
    pub class: ChangeClass,
    pub kind: ChangeKind,
    /// The tool's name (or its canonical JSON when the name is not a string).
    pub tool: String,
    /// Dotted path inside the tool's input schema (`location.city`, `tags.items`), or
    /// `outputSchema.…` for the output schema; `None` for the tool itself or the root.
    #[serde(default)]
    pub path: Option<String>,
    /// Human-readable detail, e.g. `type string → integer`.
    pub detail: String,
}

impl Change {
    /// A change of `kind`, with the kind's class.
    pub fn new(
        kind: ChangeKind,
        tool: impl Into<String>,
        path: Option<String>,
        detail: impl Into<String>,
    ) -> Self {
        Change {
            class: kind.class(),
            kind,
            tool: tool.into(),
            path,
            detail: detail.into(),
        }
    }
}

/// The worst class among `changes`, `None` when there are none.
pub fn worst(changes: &[Change]) -> Option<ChangeClass> {
    changes.iter().map(|c| c.class).max()
}

/// Every change from `old` to `new`, classified and sorted (see the module docs).
/// Identical lists give an empty list.
pub fn diff_tools(old: &[Value], new: &[Value]) -> Vec<Change> {
    let mut groups: BTreeMap<String, (Vec<&Value>, Vec<&Value>)> = BTreeMap::new();
    for tool in old {
        groups.entry(tool_id(tool)).or_default().0.push(tool);
    }
    for tool in new {
        groups.entry(tool_id(tool)).or_default().1.push(tool);
    }

    let mut out = Vec::new();
    for (id, (mut olds, mut news)) in groups {
        // Copies identical on both sides are unchanged.
        olds.retain(|o| match news.iter().position(|n| same(o, n)) {
            Some(i) => {
                news.remove(i);
                false
            }
            None => true,
        });
        let paired = olds.len().min(news.len());
        for (o, n) in olds.iter().zip(&news) {
            diff_tool(&id, o, n, &mut out);
        }
        for _ in &olds[paired..] {
            out.push(Change::new(
                ChangeKind::ToolRemoved,
                &id,
                None,
                "tool removed",
            ));
        }
        for _ in &news[paired..] {
            out.push(Change::new(ChangeKind::ToolAdded, &id, None, "tool added"));
        }
    }
    out.sort_by(|a, b| {
        (&a.tool, &a.path, a.kind, &a.detail).cmp(&(&b.tool, &b.path, b.kind, &b.detail))
    });
    out
}

/// Top-level fields left out of the tool-list hash, ignored here too.
const IGNORED_TOP_LEVEL: [&str; 3] = ["_meta", "ttlMs", "cacheScope"];

fn tool_id(tool: &Value) -> String {
    match tool.get("name") {
        Some(Value::String(name)) => name.clone(),
        _ => canonical(tool),
    }
}

fn diff_tool(id: &str, old: &Value, new: &Value, out: &mut Vec<Change>) {
    let (Some(o), Some(n)) = (old.as_object(), new.as_object()) else {
        // Unreachable for ids from string names (only objects have them); kept total.
        out.push(Change::new(
            ChangeKind::ToolFieldChanged,
            id,
            None,
            format!("tool {} → {}", render(old), render(new)),
        ));
        return;
    };
    for key in union_keys(o, n) {
        if key == "name" || IGNORED_TOP_LEVEL.contains(&key) {
            continue;
        }
        let (a, b) = (o.get(key), n.get(key));
        if same_opt(a, b) {
            continue;
        }
        let mut push = |kind, detail: String| out.push(Change::new(kind, id, None, detail));
        match key {
            "title" => push(
                ChangeKind::TitleChanged,
                format!("title {} → {}", render_opt(a), render_opt(b)),
            ),
            "description" => push(
                ChangeKind::DescriptionChanged,
                format!("description {} → {}", render_opt(a), render_opt(b)),
            ),
            "icons" => push(
                ChangeKind::MetadataChanged,
                format!("icons {} → {}", render_opt(a), render_opt(b)),
            ),
            "annotations" => diff_annotations(id, a, b, out),
            "inputSchema" => match (a, b) {
                (Some(a), Some(b)) => {
                    let mut walker = Walker::new(id);
                    walker.schema(a, b, &None, false);
                    out.append(&mut walker.out);
                }
                _ => push(
                    ChangeKind::SchemaChanged,
                    format!("inputSchema {} → {}", render_opt(a), render_opt(b)),
                ),
            },
            "outputSchema" => match (a, b) {
                (None, Some(_)) => {
                    push(ChangeKind::OutputSchemaAdded, "output schema added".into())
                }
                (Some(_), None) => push(
                    ChangeKind::OutputSchemaRemoved,
                    "output schema removed".into(),
                ),
                (Some(a), Some(b)) => {
                    let mut walker = Walker::new(id);
                    walker.schema(a, b, &Some("outputSchema".to_string()), false);
                    out.extend(walker.out.into_iter().map(to_output_change));
                }
                (None, None) => {}
            },
            _ => push(
                ChangeKind::ToolFieldChanged,
                format!("`{key}` {} → {}", render_opt(a), render_opt(b)),
            ),
        }
    }
}

fn diff_annotations(id: &str, a: Option<&Value>, b: Option<&Value>, out: &mut Vec<Change>) {
    let empty = Map::new();
    let (Some(o), Some(n)) = (map_or_empty(a, &empty), map_or_empty(b, &empty)) else {
        out.push(Change::new(
            ChangeKind::AnnotationsChanged,
            id,
            None,
            format!("annotations {} → {}", render_opt(a), render_opt(b)),
        ));
        return;
    };
    for key in union_keys(o, n) {
        let (x, y) = (o.get(key), n.get(key));
        if !same_opt(x, y) {
            out.push(Change::new(
                ChangeKind::AnnotationsChanged,
                id,
                None,
                format!("annotation `{key}` {} → {}", render_opt(x), render_opt(y)),
            ));
        }
    }
}

/// Maps a change found by walking `outputSchema` as if it were an input schema to its
/// output-side kind (see "Output schema" in the module docs).
fn to_output_change(change: Change) -> Change {
    use ChangeKind::*;
    let kind = match change.kind {
        RequiredParamAdded | OptionalParamAdded => OutputPropertyAdded,
        ParamRemoved => OutputPropertyRemoved,
        k @ (DescriptionChanged | TitleChanged | AnnotationsChanged | DefaultChanged
        | MetadataChanged | DefinitionAdded | DefinitionRemoved) => k,
        _ => OutputSchemaChanged,
    };
    Change::new(kind, change.tool, change.path, change.detail)
}

/// Lower bounds: a larger value is stricter.
const LOWER_BOUNDS: [&str; 6] = [
    "minimum",
    "exclusiveMinimum",
    "minLength",
    "minItems",
    "minProperties",
    "minContains",
];
/// Upper bounds: a smaller value is stricter.
const UPPER_BOUNDS: [&str; 6] = [
    "maximum",
    "exclusiveMaximum",
    "maxLength",
    "maxItems",
    "maxProperties",
    "maxContains",
];
/// Annotation keywords that do not affect validation.
const METADATA: [&str; 8] = [
    "examples",
    "$comment",
    "deprecated",
    "readOnly",
    "writeOnly",
    "$schema",
    "$id",
    "contentMediaType",
];

/// Walks two versions of one tool's schema, collecting changes.
struct Walker<'a> {
    tool: &'a str,
    out: Vec<Change>,
}

impl<'a> Walker<'a> {
    fn new(tool: &'a str) -> Self {
        Walker {
            tool,
            out: Vec::new(),
        }
    }

    /// Records a change. `strict` (inside `oneOf`) turns additive kinds into
    /// `SchemaChanged`. At the root of the input schema the detail says so.
    fn emit(&mut self, kind: ChangeKind, path: &Option<String>, strict: bool, detail: String) {
        let (kind, detail) = if strict && kind.class() == ChangeClass::Additive {
            (
                ChangeKind::SchemaChanged,
                format!("{detail} (inside oneOf)"),
            )
        } else {
            (kind, detail)
        };
        let detail = match path {
            None => format!("inputSchema {detail}"),
            Some(_) => detail,
        };
        self.out
            .push(Change::new(kind, self.tool, path.clone(), detail));
    }

    /// Compares two versions of the schema at `path`.
    fn schema(&mut self, old: &Value, new: &Value, path: &Option<String>, strict: bool) {
        if same(old, new) {
            return;
        }
        let (Some(o), Some(n)) = (as_schema(old), as_schema(new)) else {
            self.emit(
                ChangeKind::SchemaChanged,
                path,
                strict,
                format!("schema {} → {}", render(old), render(new)),
            );
            return;
        };
        let (o, n) = (normalize(o), normalize(n));
        if o == n {
            return;
        }
        self.object(&o, &n, path, strict);
        for key in union_keys(&o, &n) {
            let (a, b) = (o.get(key), n.get(key));
            if same_opt(a, b) {
                continue;
            }
            let change = |what: &str| format!("{what} {} → {}", render_opt(a), render_opt(b));
            match key {
                "properties" | "required" => {} // in `object`
                "type" => self.types(a, b, path, strict),
                "enum" => self.enums(a, b, path, strict),
                "const" => {
                    let kind = if b.is_none() {
                        ChangeKind::ConstraintRelaxed
                    } else {
                        ChangeKind::ConstChanged
                    };
                    self.emit(kind, path, strict, change("const"));
                }
                "items" | "additionalItems" | "contains" | "propertyNames" => {
                    let sub = child(path, key);
                    match (a, b) {
                        (Some(Value::Array(_)), _) | (_, Some(Value::Array(_))) => {
                            self.emit(ChangeKind::SchemaChanged, &sub, strict, change(key))
                        }
                        // A missing subschema accepts anything, like `{}`.
                        _ => self.schema(
                            a.unwrap_or(&EMPTY_SCHEMA),
                            b.unwrap_or(&EMPTY_SCHEMA),
                            &sub,
                            strict,
                        ),
                    }
                }
                "anyOf" | "allOf" | "oneOf" => self.branches(key, a, b, path, strict),
                "$defs" | "definitions" => self.definitions(key, a, b, path, strict),
                "additionalProperties" | "unevaluatedProperties" => {
                    // Absent or `true` allows anything; `false` nothing.
                    let open = |v: Option<&Value>| matches!(v, None | Some(Value::Bool(true)));
                    let closed = |v: Option<&Value>| matches!(v, Some(Value::Bool(false)));
                    let kind = if open(a) && closed(b) {
                        ChangeKind::ConstraintTightened
                    } else if closed(a) && open(b) {
                        ChangeKind::ConstraintRelaxed
                    } else {
                        ChangeKind::SchemaChanged
                    };
                    self.emit(kind, path, strict, change(key));
                }
                "uniqueItems" => {
                    let on = |v: Option<&Value>| match v {
                        None => Some(false),
                        Some(v) => v.as_bool(),
                    };
                    let kind = match (on(a), on(b)) {
                        (Some(false), Some(true)) => ChangeKind::ConstraintTightened,
                        (Some(true), Some(false)) => ChangeKind::ConstraintRelaxed,
                        _ => ChangeKind::SchemaChanged,
                    };
                    self.emit(kind, path, strict, change(key));
                }
                k if LOWER_BOUNDS.contains(&k) || UPPER_BOUNDS.contains(&k) => {
                    let lower = LOWER_BOUNDS.contains(&k);
                    let num = |v: Option<&Value>| v.map(|v| v.as_f64());
                    let kind = match (num(a), num(b)) {
                        (None, Some(Some(_))) => ChangeKind::ConstraintTightened,
                        (Some(Some(_)), None) => ChangeKind::ConstraintRelaxed,
                        (Some(Some(x)), Some(Some(y))) if (y > x) == lower && x != y => {
                            ChangeKind::ConstraintTightened
                        }
                        (Some(Some(x)), Some(Some(y))) if x != y => ChangeKind::ConstraintRelaxed,
                        _ => ChangeKind::SchemaChanged,
                    };
                    self.emit(kind, path, strict, change(&format!("`{k}`")));
                }
                "description" => {
                    self.emit(ChangeKind::DescriptionChanged, path, false, change(key))
                }
                "title" => self.emit(ChangeKind::TitleChanged, path, false, change(key)),
                "default" => self.emit(ChangeKind::DefaultChanged, path, false, change(key)),
                k if METADATA.contains(&k) || k.starts_with("x-") => self.emit(
                    ChangeKind::MetadataChanged,
                    path,
                    false,
                    change(&format!("`{k}`")),
                ),
                k => self.emit(
                    ChangeKind::SchemaChanged,
                    path,
                    strict,
                    change(&format!("`{k}`")),
                ),
            }
        }
    }

    /// `properties` and `required` of an object schema.
    fn object(
        &mut self,
        o: &Map<String, Value>,
        n: &Map<String, Value>,
        path: &Option<String>,
        strict: bool,
    ) {
        let no_properties = Map::new();
        let required = |m: &'_ Map<String, Value>| -> Option<BTreeSet<String>> {
            match m.get("required") {
                None => Some(BTreeSet::new()),
                Some(Value::Array(items)) => items
                    .iter()
                    .map(|i| i.as_str().map(str::to_owned))
                    .collect(),
                Some(_) => None,
            }
        };
        let (op, np) = (
            map_or_empty(o.get("properties"), &no_properties),
            map_or_empty(n.get("properties"), &no_properties),
        );
        let (or, nr) = (required(o), required(n));
        for key in ["properties", "required"] {
            let (a, b) = (o.get(key), n.get(key));
            let valid = if key == "properties" {
                op.is_some() && np.is_some()
            } else {
                or.is_some() && nr.is_some()
            };
            if !valid && !same_opt(a, b) {
                self.emit(
                    ChangeKind::SchemaChanged,
                    path,
                    strict,
                    format!("{key} {} → {}", render_opt(a), render_opt(b)),
                );
            }
        }
        let empty = BTreeSet::new();
        let (or_set, nr_set) = match (&or, &nr) {
            (Some(a), Some(b)) => (a, b),
            _ => (&empty, &empty),
        };
        let mut added_or_removed = BTreeSet::new();
        if let (Some(op), Some(np)) = (op, np) {
            for name in union_keys(op, np) {
                let sub = child(path, name);
                match (op.get(name), np.get(name)) {
                    (None, Some(s)) => {
                        added_or_removed.insert(name.to_owned());
                        let req = nr_set.contains(name);
                        let (kind, how) = if req {
                            (ChangeKind::RequiredParamAdded, "required")
                        } else {
                            (ChangeKind::OptionalParamAdded, "optional")
                        };
                        let detail = match type_label(s) {
                            Some(t) => format!("added as {how}, type {t}"),
                            None => format!("added as {how}"),
                        };
                        self.emit(kind, &sub, strict, detail);
                    }
                    (Some(_), None) => {
                        added_or_removed.insert(name.to_owned());
                        let was = if or_set.contains(name) {
                            "required"
                        } else {
                            "optional"
                        };
                        self.emit(
                            ChangeKind::ParamRemoved,
                            &sub,
                            strict,
                            format!("removed (was {was})"),
                        );
                    }
                    (Some(a), Some(b)) => self.schema(a, b, &sub, strict),
                    (None, None) => {}
                }
            }
        }
        for name in or_set.symmetric_difference(nr_set) {
            if added_or_removed.contains(name) {
                continue;
            }
            let sub = child(path, name);
            if nr_set.contains(name) {
                self.emit(
                    ChangeKind::ParamMadeRequired,
                    &sub,
                    strict,
                    "optional → required".into(),
                );
            } else {
                self.emit(
                    ChangeKind::ParamMadeOptional,
                    &sub,
                    strict,
                    "required → optional".into(),
                );
            }
        }
    }

    fn types(&mut self, a: Option<&Value>, b: Option<&Value>, path: &Option<String>, strict: bool) {
        let (old, new) = match (type_set(a), type_set(b)) {
            (Some(old), Some(new)) => (old, new),
            _ => {
                let detail = format!("type {} → {}", render_opt(a), render_opt(b));
                return self.emit(ChangeKind::SchemaChanged, path, strict, detail);
            }
        };
        let detail = format!("type {} → {}", show_types(&old), show_types(&new));
        let kind = match (&old, &new) {
            (_, None) => ChangeKind::ParamTypeWidened,
            (None, Some(_)) => ChangeKind::ParamTypeChanged,
            (Some(old), Some(new)) => {
                let lost = old
                    .iter()
                    .any(|t| !new.contains(t) && (t != "integer" || !new.contains("number")));
                if lost {
                    ChangeKind::ParamTypeChanged
                } else if old == new {
                    return;
                } else {
                    ChangeKind::ParamTypeWidened
                }
            }
        };
        self.emit(kind, path, strict, detail);
    }

    fn enums(&mut self, a: Option<&Value>, b: Option<&Value>, path: &Option<String>, strict: bool) {
        let set = |v: Option<&Value>| -> Option<Option<BTreeMap<String, Value>>> {
            match v {
                None => Some(None),
                Some(Value::Array(items)) => Some(Some(
                    items.iter().map(|i| (canonical(i), i.clone())).collect(),
                )),
                Some(_) => None,
            }
        };
        let list = |vals: Vec<&Value>| render(&Value::Array(vals.into_iter().cloned().collect()));
        match (set(a), set(b)) {
            (Some(Some(old)), Some(Some(new))) => {
                let removed: Vec<&Value> = old
                    .iter()
                    .filter(|(k, _)| !new.contains_key(*k))
                    .map(|(_, v)| v)
                    .collect();
                let added: Vec<&Value> = new
                    .iter()
                    .filter(|(k, _)| !old.contains_key(*k))
                    .map(|(_, v)| v)
                    .collect();
                if !removed.is_empty() {
                    let detail = format!("enum values removed: {}", list(removed));
                    self.emit(ChangeKind::EnumValuesRemoved, path, strict, detail);
                }
                if !added.is_empty() {
                    let detail = format!("enum values added: {}", list(added));
                    self.emit(ChangeKind::EnumValuesAdded, path, strict, detail);
                }
            }
            (Some(None), Some(Some(_))) => self.emit(
                ChangeKind::ConstraintTightened,
                path,
                strict,
                format!("enum introduced: {}", render_opt(b)),
            ),
            (Some(Some(_)), Some(None)) => self.emit(
                ChangeKind::ConstraintRelaxed,
                path,
                strict,
                format!("enum dropped (was {})", render_opt(a)),
            ),
            _ => self.emit(
                ChangeKind::SchemaChanged,
                path,
                strict,
                format!("enum {} → {}", render_opt(a), render_opt(b)),
            ),
        }
    }

    /// `anyOf` / `allOf` / `oneOf`: equal counts are compared position by position (both
    /// are monotone for anyOf/allOf; oneOf is made strict), anything else is unclassified.
    fn branches(
        &mut self,
        key: &str,
        a: Option<&Value>,
        b: Option<&Value>,
        path: &Option<String>,
        strict: bool,
    ) {
        let detail = format!("`{key}` {} → {}", render_opt(a), render_opt(b));
        match (a, b) {
            (Some(Value::Array(x)), Some(Value::Array(y))) if x.len() == y.len() => {
                let strict = strict || key == "oneOf";
                for (i, (x, y)) in x.iter().zip(y).enumerate() {
                    let sub = Some(match path {
                        Some(p) => format!("{p}.{key}[{i}]"),
                        None => format!("{key}[{i}]"),
                    });
                    self.schema(x, y, &sub, strict);
                }
            }
            (None, Some(Value::Array(_))) => {
                self.emit(ChangeKind::ConstraintTightened, path, strict, detail)
            }
            (Some(Value::Array(_)), None) => {
                self.emit(ChangeKind::ConstraintRelaxed, path, strict, detail)
            }
            _ => self.emit(ChangeKind::SchemaChanged, path, strict, detail),
        }
    }

    fn definitions(
        &mut self,
        key: &str,
        a: Option<&Value>,
        b: Option<&Value>,
        path: &Option<String>,
        strict: bool,
    ) {
        let empty = Map::new();
        let (Some(o), Some(n)) = (map_or_empty(a, &empty), map_or_empty(b, &empty)) else {
            let detail = format!("`{key}` {} → {}", render_opt(a), render_opt(b));
            return self.emit(ChangeKind::SchemaChanged, path, strict, detail);
        };
        for name in union_keys(o, n) {
            let sub = Some(match path {
                Some(p) => format!("{p}.{key}.{name}"),
                None => format!("{key}.{name}"),
            });
            match (o.get(name), n.get(name)) {
                (None, Some(_)) => self.emit(
                    ChangeKind::DefinitionAdded,
                    &sub,
                    strict,
                    "definition added".into(),
                ),
                (Some(_), None) => self.emit(
                    ChangeKind::DefinitionRemoved,
                    &sub,
                    strict,
                    "definition removed".into(),
                ),
                (Some(x), Some(y)) => self.schema(x, y, &sub, strict),
                (None, None) => {}
            }
        }
    }
}

static EMPTY_SCHEMA: Value = Value::Bool(true);

/// An object member as a map (absent: `empty`); `None` when it is not an object.
fn map_or_empty<'v>(
    v: Option<&'v Value>,
    empty: &'v Map<String, Value>,
) -> Option<&'v Map<String, Value>> {
    match v {
        None => Some(empty),
        Some(v) => v.as_object(),
    }
}

/// A schema as an object: `true` is the empty schema, other non-objects are `None`.
fn as_schema(v: &Value) -> Option<Map<String, Value>> {
    match v {
        Value::Object(m) => Some(m.clone()),
        Value::Bool(true) => Some(Map::new()),
        _ => None,
    }
}

/// Reads a `type`-less schema whose `anyOf` branches are all bare `{"type": …}` as the
/// union of those types (Pydantic's `Optional[X]`).
fn normalize(mut m: Map<String, Value>) -> Map<String, Value> {
    if m.contains_key("type") {
        return m;
    }
    let Some(Value::Array(branches)) = m.get("anyOf") else {
        return m;
    };
    let mut union = BTreeSet::new();
    for branch in branches {
        let Some(b) = branch.as_object() else {
            return m;
        };
        if b.len() != 1 {
            return m;
        }
        match type_set(b.get("type")) {
            Some(Some(types)) => union.extend(types),
            _ => return m,
        }
    }
    if union.is_empty() {
        return m;
    }
    m.remove("anyOf");
    let types: Vec<Value> = union.into_iter().map(Value::String).collect();
    m.insert("type".into(), Value::Array(types));
    m
}

/// `Some(None)`: no `type`; `Some(Some(set))`: the types; `None`: not a valid `type`.
fn type_set(v: Option<&Value>) -> Option<Option<BTreeSet<String>>> {
    match v {
        None => Some(None),
        Some(Value::String(s)) => Some(Some(BTreeSet::from([s.clone()]))),
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| i.as_str().map(str::to_owned))
            .collect::<Option<BTreeSet<_>>>()
            .map(Some),
        Some(_) => None,
    }
}

fn show_types(t: &Option<BTreeSet<String>>) -> String {
    match t {
        None => "(any)".into(),
        Some(set) if set.len() == 1 => set.iter().next().cloned().unwrap_or_default(),
        Some(set) => format!("[{}]", set.iter().cloned().collect::<Vec<_>>().join(", ")),
    }
}

fn type_label(schema: &Value) -> Option<String> {
    let m = normalize(as_schema(schema)?);
    match type_set(m.get("type")) {
        Some(Some(t)) => Some(show_types(&Some(t))),
        _ => None,
    }
}

fn child(path: &Option<String>, segment: &str) -> Option<String> {
    Some(match path {
        Some(p) => format!("{p}.{segment}"),
        None => segment.to_owned(),
    })
}

fn union_keys<'m>(a: &'m Map<String, Value>, b: &'m Map<String, Value>) -> BTreeSet<&'m str> {
    a.keys().chain(b.keys()).map(String::as_str).collect()
}

/// Equal as JSON values, numbers compared as doubles (as the tool-list hash does).
fn same(a: &Value, b: &Value) -> bool {
    a == b || canonical(a) == canonical(b)
}

fn same_opt(a: Option<&Value>, b: Option<&Value>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => same(a, b),
        (None, None) => true,
        _ => false,
    }
}

/// Deterministic JSON: object keys sorted, numbers as doubles (`1` and `1.0` agree).
fn canonical(v: &Value) -> String {
    let mut out = String::new();
    write_canonical(v, &mut out);
    out
}

fn write_canonical(v: &Value, out: &mut String) {
    match v {
        Value::Number(n) => match n.as_f64() {
            Some(f) if f.is_finite() => out.push_str(&format!("{f}")),
            _ => out.push_str(&n.to_string()),
        },
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (k, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                write_canonical(item, out);
            }
            out.push('}');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// Longest rendering of one value in a detail, in characters.
const MAX_RENDER: usize = 120;

/// Compact canonical JSON for details, cut at [`MAX_RENDER`] characters.
fn render(v: &Value) -> String {
    let s = canonical(v);
    if s.chars().count() <= MAX_RENDER {
        s
    } else {
        let cut: String = s.chars().take(MAX_RENDER - 1).collect();
        format!("{cut}…")
    }
}

fn render_opt(v: Option<&Value>) -> String {
    v.map_or_else(|| "(none)".to_owned(), render)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ChangeKind::*;
    use serde_json::json;

    /// A tool with an object input schema.
    fn tool(name: &str, properties: Value, required: Value) -> Value {
        json!({
            "name": name,
            "description": format!("The {name} tool"),
            "inputSchema": {"type": "object", "properties": properties, "required": required},
        })
    }

    /// `(kind, path)` of every change, in order.
    fn kinds(changes: &[Change]) -> Vec<(ChangeKind, Option<&str>)> {
        changes
            .iter()
            .map(|c| (c.kind, c.path.as_deref()))
            .collect()
    }

    /// Diffs two versions of one tool's parameter `p`.
    fn param(old: Value, new: Value) -> Vec<Change> {
        let changes = diff_tools(
            &[tool("t", json!({"p": old}), json!([]))],
            &[tool("t", json!({"p": new}), json!([]))],
        );
        for c in &changes {
            assert_eq!(c.class, c.kind.class());
        }
        changes
    }

    fn one(changes: &[Change]) -> (ChangeKind, Option<&str>, &str) {
        assert_eq!(changes.len(), 1, "{changes:#?}");
        let c = &changes[0];
        (c.kind, c.path.as_deref(), c.detail.as_str())
    }

    #[test]
    fn identical_lists_give_nothing() {
        let list = vec![
            tool("a", json!({"x": {"type": "string"}}), json!(["x"])),
            tool("b", json!({}), json!([])),
        ];
        assert!(diff_tools(&list, &list).is_empty());
        assert!(diff_tools(&[], &[]).is_empty());
        assert_eq!(worst(&diff_tools(&list, &list)), None);
    }

    #[test]
    fn reordered_properties_required_enum_and_types_are_no_change() {
        let old: Vec<Value> = serde_json::from_str(
            r#"[{"name": "t", "inputSchema": {"type": "object",
                "properties": {"a": {"type": ["string", "null"], "enum": ["x", "y", null]},
                               "b": {"type": "integer", "minimum": 1}},
                "required": ["a", "b"]}}]"#,
        )
        .unwrap();
        let new: Vec<Value> = serde_json::from_str(
            r#"[{"inputSchema": {"required": ["b", "a"],
                "properties": {"b": {"minimum": 1.0, "type": "integer"},
                               "a": {"enum": [null, "y", "x"], "type": ["null", "string"]}},
                "type": "object"}, "name": "t"}]"#,
        )
        .unwrap();
        assert_eq!(diff_tools(&old, &new), vec![]);
    }

    #[test]
    fn tools_removed_and_added() {
        let a = tool("a", json!({}), json!([]));
        let b = tool("b", json!({}), json!([]));
        let c = tool("c", json!({}), json!([]));
        let changes = diff_tools(&[a.clone(), b], &[a, c]);
        assert_eq!(
            changes,
            vec![
                Change::new(ToolRemoved, "b", None, "tool removed"),
                Change::new(ToolAdded, "c", None, "tool added"),
            ]
        );
        assert_eq!(changes[0].class, ChangeClass::Breaking);
        assert_eq!(changes[1].class, ChangeClass::Additive);
    }

    #[test]
    fn params_added_and_removed() {
        let old = tool(
            "t",
            json!({"keep": {"type": "string"}, "gone": {}}),
            json!(["gone"]),
        );
        let new = tool(
            "t",
            json!({"keep": {"type": "string"}, "must": {"type": "integer"}, "may": {}}),
            json!(["must"]),
        );
        let changes = diff_tools(&[old], &[new]);
        assert_eq!(
            changes,
            vec![
                Change::new(
                    ParamRemoved,
                    "t",
                    Some("gone".into()),
                    "removed (was required)"
                ),
                Change::new(
                    OptionalParamAdded,
                    "t",
                    Some("may".into()),
                    "added as optional"
                ),
                Change::new(
                    RequiredParamAdded,
                    "t",
                    Some("must".into()),
                    "added as required, type integer"
                ),
            ]
        );
        assert_eq!(ParamRemoved.class(), ChangeClass::Breaking);
        assert_eq!(OptionalParamAdded.class(), ChangeClass::Additive);
        assert_eq!(RequiredParamAdded.class(), ChangeClass::Breaking);
    }

    #[test]
    fn made_required_and_optional() {
        let old = tool("t", json!({"a": {}, "b": {}}), json!(["a"]));
        let new = tool("t", json!({"a": {}, "b": {}}), json!(["b"]));
        assert_eq!(
            kinds(&diff_tools(&[old], &[new])),
            vec![
                (ParamMadeOptional, Some("a")),
                (ParamMadeRequired, Some("b"))
            ]
        );
        assert_eq!(ParamMadeOptional.class(), ChangeClass::Additive);
        assert_eq!(ParamMadeRequired.class(), ChangeClass::Breaking);
    }

    #[test]
    fn type_changes_and_unions() {
        let c = param(json!({"type": "string"}), json!({"type": "integer"}));
        assert_eq!(
            one(&c),
            (ParamTypeChanged, Some("p"), "type string → integer")
        );
        // Adding null relaxes; removing it is breaking.
        let c = param(
            json!({"type": "string"}),
            json!({"type": ["string", "null"]}),
        );
        assert_eq!(
            one(&c),
            (ParamTypeWidened, Some("p"), "type string → [null, string]")
        );
        assert_eq!(c[0].class, ChangeClass::Additive);
        let c = param(
            json!({"type": ["string", "null"]}),
            json!({"type": "string"}),
        );
        assert_eq!(
            one(&c),
            (ParamTypeChanged, Some("p"), "type [null, string] → string")
        );
        // A one-element array is the same as the string.
        assert!(param(json!({"type": "string"}), json!({"type": ["string"]})).is_empty());
        // integer ⊂ number.
        let c = param(json!({"type": "integer"}), json!({"type": "number"}));
        assert_eq!(one(&c).0, ParamTypeWidened);
        let c = param(json!({"type": "number"}), json!({"type": "integer"}));
        assert_eq!(one(&c).0, ParamTypeChanged);
        // Dropping `type` accepts anything; introducing it narrows.
        assert_eq!(
            one(&param(json!({"type": "string"}), json!({}))).0,
            ParamTypeWidened
        );
        let c = param(json!({}), json!({"type": "string"}));
        assert_eq!(
            one(&c),
            (ParamTypeChanged, Some("p"), "type (any) → string")
        );
        // Swapping one type for another in a union loses one.
        let c = param(
            json!({"type": ["string", "null"]}),
            json!({"type": ["integer", "null"]}),
        );
        assert_eq!(one(&c).0, ParamTypeChanged);
        // Not a valid `type`: unclassified.
        assert_eq!(
            one(&param(json!({"type": 7}), json!({"type": "string"}))).0,
            SchemaChanged
        );
    }

    #[test]
    fn pydantic_optional_reads_as_a_type_union() {
        let optional = json!({"anyOf": [{"type": "string"}, {"type": "null"}], "default": null});
        let union = json!({"type": ["string", "null"], "default": null});
        assert!(param(optional.clone(), union).is_empty());
        let c = param(json!({"type": "string", "default": null}), optional.clone());
        assert_eq!(one(&c).0, ParamTypeWidened);
        let c = param(optional, json!({"type": "string", "default": null}));
        assert_eq!(one(&c).0, ParamTypeChanged);
    }

    #[test]
    fn enum_values() {
        let c = param(
            json!({"enum": ["a", "b", "c"]}),
            json!({"enum": ["a", "b"]}),
        );
        assert_eq!(
            one(&c),
            (
                EnumValuesRemoved,
                Some("p"),
                r#"enum values removed: ["c"]"#
            )
        );
        let c = param(json!({"enum": ["a"]}), json!({"enum": ["a", 1, null]}));
        assert_eq!(
            one(&c),
            (EnumValuesAdded, Some("p"), r#"enum values added: [1,null]"#)
        );
        let c = param(json!({"enum": ["a", "b"]}), json!({"enum": ["b", "c"]}));
        assert_eq!(
            kinds(&c),
            vec![(EnumValuesRemoved, Some("p")), (EnumValuesAdded, Some("p"))]
        );
        assert!(param(json!({"enum": [1, "x"]}), json!({"enum": ["x", 1.0]})).is_empty());
        let c = param(
            json!({"type": "string"}),
            json!({"type": "string", "enum": ["a"]}),
        );
        assert_eq!(
            one(&c),
            (ConstraintTightened, Some("p"), r#"enum introduced: ["a"]"#)
        );
        let c = param(json!({"enum": ["a"]}), json!({}));
        assert_eq!(one(&c).0, ConstraintRelaxed);
        assert_eq!(
            one(&param(json!({"enum": "a"}), json!({"enum": ["a"]}))).0,
            SchemaChanged
        );
    }

    #[test]
    fn const_changes() {
        let c = param(json!({"const": "v1"}), json!({"const": "v2"}));
        assert_eq!(one(&c), (ConstChanged, Some("p"), r#"const "v1" → "v2""#));
        assert_eq!(c[0].class, ChangeClass::Breaking);
        assert_eq!(one(&param(json!({}), json!({"const": 1}))).0, ConstChanged);
        assert_eq!(
            one(&param(json!({"const": 1}), json!({}))).0,
            ConstraintRelaxed
        );
    }

    #[test]
    fn bounds_and_other_constraints() {
        let c = param(json!({"maxLength": 100}), json!({"maxLength": 10}));
        assert_eq!(
            one(&c),
            (ConstraintTightened, Some("p"), "`maxLength` 100 → 10")
        );
        assert_eq!(
            one(&param(json!({"maxLength": 10}), json!({"maxLength": 100}))).0,
            ConstraintRelaxed
        );
        assert_eq!(
            one(&param(json!({"minimum": 0}), json!({"minimum": 1}))).0,
            ConstraintTightened
        );
        assert_eq!(
            one(&param(json!({"minimum": 1}), json!({"minimum": 0}))).0,
            ConstraintRelaxed
        );
        assert_eq!(
            one(&param(json!({}), json!({"minItems": 1}))).0,
            ConstraintTightened
        );
        assert_eq!(
            one(&param(json!({"minItems": 1}), json!({}))).0,
            ConstraintRelaxed
        );
        // Draft-4 boolean exclusiveMinimum: not a number, unclassified.
        let c = param(
            json!({"exclusiveMinimum": false}),
            json!({"exclusiveMinimum": true}),
        );
        assert_eq!(one(&c).0, SchemaChanged);
        assert_eq!(
            one(&param(json!({}), json!({"uniqueItems": true}))).0,
            ConstraintTightened
        );
        assert_eq!(
            one(&param(json!({"uniqueItems": true}), json!({}))).0,
            ConstraintRelaxed
        );
        let c = param(
            json!({"type": "object"}),
            json!({"type": "object", "additionalProperties": false}),
        );
        assert_eq!(one(&c).0, ConstraintTightened);
        let c = param(
            json!({"additionalProperties": false}),
            json!({"additionalProperties": true}),
        );
        assert_eq!(one(&c).0, ConstraintRelaxed);
        let c = param(
            json!({"additionalProperties": {"type": "string"}}),
            json!({}),
        );
        assert_eq!(one(&c).0, SchemaChanged);
    }

    #[test]
    fn unclassifiable_changes_are_schema_changed_and_breaking() {
        let c = param(json!({"pattern": "^a"}), json!({"pattern": "^b"}));
        assert_eq!(
            one(&c),
            (SchemaChanged, Some("p"), r#"`pattern` "^a" → "^b""#)
        );
        assert_eq!(c[0].class, ChangeClass::Breaking);
        assert_eq!(
            one(&param(json!({"format": "email"}), json!({}))).0,
            SchemaChanged
        );
        let c = param(json!({"$ref": "#/$defs/A"}), json!({"$ref": "#/$defs/B"}));
        assert_eq!(one(&c).0, SchemaChanged);
        // A schema that is not an object.
        let c = param(json!({"type": "string"}), json!(false));
        assert_eq!(
            one(&c),
            (
                SchemaChanged,
                Some("p"),
                r#"schema {"type":"string"} → false"#
            )
        );
        // `true` is the empty schema.
        assert!(param(json!(true), json!({})).is_empty());
    }

    #[test]
    fn cosmetic_changes() {
        let old = json!({"name": "t", "title": "T", "description": "old",
            "annotations": {"readOnlyHint": true, "title": "T"},
            "inputSchema": {"type": "object", "description": "args",
                "properties": {"p": {"type": "string", "description": "a", "title": "P",
                                     "default": "x", "examples": ["x"]}}}});
        let new = json!({"name": "t", "title": "T2", "description": "new",
            "annotations": {"readOnlyHint": false, "destructiveHint": true, "title": "T"},
            "icons": [{"src": "https://example.com/i.png"}],
            "inputSchema": {"type": "object", "description": "arguments",
                "properties": {"p": {"type": "string", "description": "b", "title": "Q",
                                     "default": "y", "examples": ["y"], "x-ui": 1}}}});
        let changes = diff_tools(&[old], &[new]);
        let details: Vec<(ChangeKind, Option<&str>, &str)> = changes
            .iter()
            .map(|c| (c.kind, c.path.as_deref(), c.detail.as_str()))
            .collect();
        assert_eq!(
            details,
            vec![
                (DescriptionChanged, None, r#"description "old" → "new""#),
                (
                    DescriptionChanged,
                    None,
                    r#"inputSchema description "args" → "arguments""#
                ),
                (TitleChanged, None, r#"title "T" → "T2""#),
                (
                    AnnotationsChanged,
                    None,
                    "annotation `destructiveHint` (none) → true"
                ),
                (
                    AnnotationsChanged,
                    None,
                    "annotation `readOnlyHint` true → false"
                ),
                (
                    MetadataChanged,
                    None,
                    r#"icons (none) → [{"src":"https://example.com/i.png"}]"#
                ),
                (DescriptionChanged, Some("p"), r#"description "a" → "b""#),
                (TitleChanged, Some("p"), r#"title "P" → "Q""#),
                (DefaultChanged, Some("p"), r#"default "x" → "y""#),
                (MetadataChanged, Some("p"), r#"`examples` ["x"] → ["y"]"#),
                (MetadataChanged, Some("p"), "`x-ui` (none) → 1"),
            ]
        );
        assert_eq!(worst(&changes), Some(ChangeClass::Cosmetic));
        // Ignored top-level fields.
        let mut volatile = tool("t", json!({}), json!([]));
        volatile["_meta"] = json!({"x": 1});
        volatile["ttlMs"] = json!(5);
        assert!(diff_tools(&[tool("t", json!({}), json!([]))], &[volatile]).is_empty());
    }

    #[test]
    fn nested_object_params() {
        let old = tool(
            "weather",
            json!({"location": {"type": "object",
                "properties": {"city": {"type": "string"}, "zip": {"type": "string"}},
                "required": ["city"]}}),
            json!(["location"]),
        );
        let new = tool(
            "weather",
            json!({"location": {"type": "object",
                "properties": {"city": {"type": "string", "description": "City name"},
                               "country": {"type": "string"},
                               "geo": {"type": "object",
                                       "properties": {"lat": {"type": "number"}}}},
                "required": ["city", "country"]}}),
            json!(["location"]),
        );
        assert_eq!(
            kinds(&diff_tools(&[old], &[new])),
            vec![
                (DescriptionChanged, Some("location.city")),
                (RequiredParamAdded, Some("location.country")),
                (OptionalParamAdded, Some("location.geo")),
                (ParamRemoved, Some("location.zip")),
            ]
        );
    }

    #[test]
    fn array_items() {
        let c = param(
            json!({"type": "array", "items": {"type": "string"}}),
            json!({"type": "array", "items": {"type": "integer"}}),
        );
        assert_eq!(
            one(&c),
            (ParamTypeChanged, Some("p.items"), "type string → integer")
        );
        let c = param(
            json!({"type": "array", "items": {"type": "object",
                "properties": {"x": {"type": "number"}, "y": {"enum": [1, 2]}}}}),
            json!({"type": "array", "items": {"type": "object",
                "properties": {"x": {"type": "number"}, "y": {"enum": [1]}},
                "required": ["x"]}}),
        );
        assert_eq!(
            kinds(&c),
            vec![
                (ParamMadeRequired, Some("p.items.x")),
                (EnumValuesRemoved, Some("p.items.y"))
            ]
        );
        // Items introduced: the element type narrows from anything.
        let c = param(
            json!({"type": "array"}),
            json!({"type": "array", "items": {"type": "string"}}),
        );
        assert_eq!(
            one(&c),
            (ParamTypeChanged, Some("p.items"), "type (any) → string")
        );
        // Tuple-form items: unclassified.
        let c = param(
            json!({"items": [{"type": "string"}]}),
            json!({"items": [{"type": "integer"}]}),
        );
        assert_eq!(
            one(&c),
            (
                SchemaChanged,
                Some("p.items"),
                r#"items [{"type":"string"}] → [{"type":"integer"}]"#
            )
        );
    }

    #[test]
    fn combinators() {
        // anyOf of equal length: position by position.
        let c = param(
            json!({"anyOf": [{"type": "string", "enum": ["a"]}, {"type": "integer"}]}),
            json!({"anyOf": [{"type": "string", "enum": ["a", "b"]}, {"type": "integer"}]}),
        );
        assert_eq!(
            one(&c),
            (
                EnumValuesAdded,
                Some("p.anyOf[0]"),
                r#"enum values added: ["b"]"#
            )
        );
        // oneOf: widening a branch is not provably safe.
        let c = param(
            json!({"oneOf": [{"type": "string", "enum": ["a"]}, {"type": "integer"}]}),
            json!({"oneOf": [{"type": "string", "enum": ["a", "b"]}, {"type": "integer"}]}),
        );
        assert_eq!(one(&c).0, SchemaChanged);
        assert!(one(&c).2.ends_with("(inside oneOf)"));
        // …but narrowing stays precise, and cosmetic stays cosmetic.
        let c = param(
            json!({"oneOf": [{"enum": ["a", "b"], "description": "x"}]}),
            json!({"oneOf": [{"enum": ["a"], "description": "y"}]}),
        );
        assert_eq!(
            kinds(&c),
            vec![
                (EnumValuesRemoved, Some("p.oneOf[0]")),
                (DescriptionChanged, Some("p.oneOf[0]"))
            ]
        );
        // Different counts: unclassified.
        let c = param(
            json!({"anyOf": [{"type": "string"}, {"$ref": "#/$defs/A"}]}),
            json!({"anyOf": [{"type": "string"}, {"$ref": "#/$defs/A"}, {"type": "null"}]}),
        );
        assert_eq!(one(&c).0, SchemaChanged);
        assert_eq!(
            one(&param(json!({}), json!({"allOf": [{}]}))).0,
            ConstraintTightened
        );
        assert_eq!(one(&param(json!({"not": {}}), json!({}))).0, SchemaChanged);
    }

    #[test]
    fn definitions() {
        let schema = |defs: Value| {
            json!({"name": "t", "inputSchema": {"type": "object",
                "properties": {"loc": {"$ref": "#/$defs/Loc"}}, "$defs": defs}})
        };
        let old = schema(
            json!({"Loc": {"type": "object", "properties": {"city": {"type": "string"}}},
                                "Old": {}}),
        );
        let new = schema(
            json!({"Loc": {"type": "object", "properties": {"city": {"type": "integer"}}},
                                "New": {}}),
        );
        assert_eq!(
            kinds(&diff_tools(&[old], &[new])),
            vec![
                (ParamTypeChanged, Some("$defs.Loc.city")),
                (DefinitionAdded, Some("$defs.New")),
                (DefinitionRemoved, Some("$defs.Old")),
            ]
        );
    }

    #[test]
    fn output_schema() {
        let with_output = |output: Option<Value>| {
            let mut t = tool("t", json!({}), json!([]));
            if let Some(o) = output {
                t["outputSchema"] = o;
            }
            t
        };
        let base = json!({"type": "object", "properties": {
            "temp": {"type": "number", "description": "°C"},
            "wind": {"type": "number"},
            "sky": {"enum": ["clear", "cloudy"]}}, "required": ["temp"]});
        let changed = json!({"type": "object", "properties": {
            "temp": {"type": "integer", "description": "Celsius"},
            "sky": {"enum": ["clear", "cloudy", "fog"]},
            "humidity": {"type": "number"}}, "required": ["temp"]});
        let changes = diff_tools(
            &[with_output(Some(base.clone()))],
            &[with_output(Some(changed))],
        );
        assert_eq!(
            kinds(&changes),
            vec![
                (OutputPropertyAdded, Some("outputSchema.humidity")),
                (OutputSchemaChanged, Some("outputSchema.sky")),
                (OutputSchemaChanged, Some("outputSchema.temp")),
                (DescriptionChanged, Some("outputSchema.temp")),
                (OutputPropertyRemoved, Some("outputSchema.wind")),
            ]
        );
        assert_eq!(changes[1].detail, r#"enum values added: ["fog"]"#);
        assert_eq!(changes[2].detail, "type number → integer");
        let c = diff_tools(&[with_output(None)], &[with_output(Some(base.clone()))]);
        assert_eq!(one(&c), (OutputSchemaAdded, None, "output schema added"));
        assert_eq!(c[0].class, ChangeClass::Additive);
        let c = diff_tools(&[with_output(Some(base))], &[with_output(None)]);
        assert_eq!(
            one(&c),
            (OutputSchemaRemoved, None, "output schema removed")
        );
        assert_eq!(c[0].class, ChangeClass::Breaking);
    }

    #[test]
    fn unknown_tool_fields_and_missing_input_schema() {
        let mut old = tool("t", json!({}), json!([]));
        let mut new = old.clone();
        new["execution"] = json!({"taskSupport": "required"});
        let c = diff_tools(std::slice::from_ref(&old), std::slice::from_ref(&new));
        assert_eq!(
            one(&c),
            (
                ToolFieldChanged,
                None,
                r#"`execution` (none) → {"taskSupport":"required"}"#
            )
        );
        new.as_object_mut().unwrap().remove("inputSchema");
        old["execution"] = new["execution"].clone();
        let c = diff_tools(&[old], &[new]);
        assert_eq!(one(&c).0, SchemaChanged);
        assert!(c[0].detail.starts_with("inputSchema {"), "{}", c[0].detail);
    }

    #[test]
    fn tools_without_string_names_and_duplicates() {
        let nameless = json!({"description": "no name", "inputSchema": {}});
        let numbered = json!({"name": 7, "inputSchema": {}});
        let c = diff_tools(
            std::slice::from_ref(&nameless),
            std::slice::from_ref(&numbered),
        );
        assert_eq!(
            c,
            vec![
                Change::new(
                    ToolRemoved,
                    r#"{"description":"no name","inputSchema":{}}"#,
                    None,
                    "tool removed"
                ),
                Change::new(
                    ToolAdded,
                    r#"{"inputSchema":{},"name":7}"#,
                    None,
                    "tool added"
                ),
            ]
        );
        assert!(
            diff_tools(&[nameless.clone(), numbered.clone()], &[nameless, numbered]).is_empty()
        );

        // Duplicate names: identical copies cancel out, the rest pair up.
        let a1 = json!({"name": "a", "description": "1"});
        let a2 = json!({"name": "a", "description": "2"});
        let a3 = json!({"name": "a", "description": "3"});
        let c = diff_tools(&[a1.clone(), a2.clone()], &[a1.clone(), a3]);
        assert_eq!(
            one(&c),
            (DescriptionChanged, None, r#"description "2" → "3""#)
        );
        let c = diff_tools(&[a1.clone(), a2], std::slice::from_ref(&a1));
        assert_eq!(one(&c), (ToolRemoved, None, "tool removed"));
    }

    #[test]
    fn odd_input_never_panics() {
        let odd = [
            json!(null),
            json!("tool"),
            json!([1, 2]),
            json!({"name": "t"}),
            json!({"name": "t", "inputSchema": null}),
            json!({"name": "t", "inputSchema": "object"}),
            json!({"name": "t", "inputSchema": {"properties": []}}),
            json!({"name": "t", "inputSchema": {"properties": {"a": 1}, "required": "a"}}),
            json!({"name": "t", "inputSchema": {"properties": {"a": {}}, "required": [1]}}),
            json!({"name": "t", "inputSchema": {"properties": {"a": {"items": 3, "anyOf": {}}}}}),
            json!({"name": "t", "inputSchema": {"$defs": [], "enum": {}, "type": [1]}}),
            json!({"name": "t", "annotations": "x", "outputSchema": 5}),
            json!({"name": "t", "outputSchema": {"properties": {"a": {"type": "string"}}}}),
        ];
        for a in &odd {
            for b in &odd {
                let changes = diff_tools(std::slice::from_ref(a), std::slice::from_ref(b));
                if a == b {
                    assert!(changes.is_empty());
                }
                for c in &changes {
                    assert_eq!(c.class, c.kind.class());
                }
            }
        }
        // `properties` that is not a map: unclassified, no recursion.
        let old = json!({"name": "t", "inputSchema": {"properties": {"a": {}}, "required": ["a"]}});
        let new = json!({"name": "t", "inputSchema": {"properties": [], "required": ["a"]}});
        let c = diff_tools(&[old], &[new]);
        assert_eq!(
            one(&c),
            (
                SchemaChanged,
                None,
                r#"inputSchema properties {"a":{}} → []"#
            )
        );
        // `required` that is not a list of strings.
        let old = json!({"name": "t", "inputSchema": {"properties": {"a": {}}, "required": ["a"]}});
        let new = json!({"name": "t", "inputSchema": {"properties": {"a": {}}, "required": "a"}});
        assert_eq!(one(&diff_tools(&[old], &[new])).0, SchemaChanged);
    }

    #[test]
    fn required_without_property_schema() {
        let old = json!({"name": "t", "inputSchema": {"type": "object"}});
        let new = json!({"name": "t", "inputSchema": {"type": "object", "required": ["x"]}});
        let c = diff_tools(std::slice::from_ref(&old), std::slice::from_ref(&new));
        assert_eq!(
            one(&c),
            (ParamMadeRequired, Some("x"), "optional → required")
        );
        let c = diff_tools(&[new], &[old]);
        assert_eq!(one(&c).0, ParamMadeOptional);
    }

    /// A realistic release: several tools, several kinds of change at once.
    #[test]
    fn realistic_before_and_after() {
        let before: Vec<Value> = serde_json::from_value(json!([
            {"name": "create_issue", "description": "Create an issue",
             "annotations": {"destructiveHint": false},
             "inputSchema": {"type": "object", "properties": {
                 "repo": {"type": "string"},
                 "title": {"type": "string"},
                 "labels": {"type": "array", "items": {"type": "string"}},
                 "priority": {"enum": ["low", "high", "urgent"]}},
              "required": ["repo", "title"]}},
            {"name": "delete_repo", "description": "Delete a repository",
             "inputSchema": {"type": "object", "properties": {"repo": {"type": "string"}},
                             "required": ["repo"]}},
            {"name": "search", "description": "Search code",
             "inputSchema": {"type": "object", "properties": {
                 "query": {"type": "string"},
                 "limit": {"type": "integer", "maximum": 100}},
              "required": ["query"]},
             "outputSchema": {"type": "object", "properties": {
                 "hits": {"type": "array"}, "total": {"type": "integer"}}}}
        ]))
        .unwrap();
        let after: Vec<Value> = serde_json::from_value(json!([
            {"name": "create_issue", "description": "Create an issue in a repository",
             "annotations": {"destructiveHint": false},
             "inputSchema": {"type": "object", "properties": {
                 "repo": {"type": "string"},
                 "title": {"type": "string"},
                 "body": {"type": "string"},
                 "labels": {"type": "array", "items": {"type": ["string", "integer"]}},
                 "priority": {"enum": ["low", "medium", "high"]},
                 "assignee": {"type": "string"}},
              "required": ["repo", "title", "assignee"]}},
            {"name": "list_repos", "description": "List repositories",
             "inputSchema": {"type": "object"}},
            {"name": "search", "description": "Search code",
             "inputSchema": {"type": "object", "properties": {
                 "query": {"type": ["string", "null"]},
                 "limit": {"type": "integer", "maximum": 50}},
              "required": ["query", "limit"]},
             "outputSchema": {"type": "object", "properties": {"hits": {"type": "array"}}}}
        ]))
        .unwrap();
        let changes = diff_tools(&before, &after);
        let expect = |kind, tool: &str, path: Option<&str>, detail: &str| {
            Change::new(kind, tool, path.map(str::to_owned), detail)
        };
        assert_eq!(
            changes,
            vec![
                expect(
                    DescriptionChanged,
                    "create_issue",
                    None,
                    r#"description "Create an issue" → "Create an issue in a repository""#
                ),
                expect(
                    RequiredParamAdded,
                    "create_issue",
                    Some("assignee"),
                    "added as required, type string"
                ),
                expect(
                    OptionalParamAdded,
                    "create_issue",
                    Some("body"),
                    "added as optional, type string"
                ),
                expect(
                    ParamTypeWidened,
                    "create_issue",
                    Some("labels.items"),
                    "type string → [integer, string]"
                ),
                expect(
                    EnumValuesRemoved,
                    "create_issue",
                    Some("priority"),
                    r#"enum values removed: ["urgent"]"#
                ),
                expect(
                    EnumValuesAdded,
                    "create_issue",
                    Some("priority"),
                    r#"enum values added: ["medium"]"#
                ),
                expect(ToolRemoved, "delete_repo", None, "tool removed"),
                expect(ToolAdded, "list_repos", None, "tool added"),
                expect(
                    ParamMadeRequired,
                    "search",
                    Some("limit"),
                    "optional → required"
                ),
                expect(
                    ConstraintTightened,
                    "search",
                    Some("limit"),
                    "`maximum` 100 → 50"
                ),
                expect(
                    OutputPropertyRemoved,
                    "search",
                    Some("outputSchema.total"),
                    "removed (was optional)"
                ),
                expect(
                    ParamTypeWidened,
                    "search",
                    Some("query"),
                    "type string → [null, string]"
                ),
            ]
        );
        assert_eq!(worst(&changes), Some(ChangeClass::Breaking));
        // Sorted by (tool, path, kind, detail).
        let mut sorted = changes.clone();
        sorted.sort_by(|a, b| {
            (&a.tool, &a.path, a.kind, &a.detail).cmp(&(&b.tool, &b.path, b.kind, &b.detail))
        });
        assert_eq!(sorted, changes);
    }

    #[test]
    fn worst_class() {
        assert!(ChangeClass::Breaking > ChangeClass::Additive);
        assert!(ChangeClass::Additive > ChangeClass::Cosmetic);
        assert_eq!(worst(&[]), None);
        let c = |kind| Change::new(kind, "t", None, "");
        assert_eq!(worst(&[c(DescriptionChanged)]), Some(ChangeClass::Cosmetic));
        assert_eq!(
            worst(&[c(DescriptionChanged), c(ToolAdded)]),
            Some(ChangeClass::Additive)
        );
        assert_eq!(
            worst(&[c(ToolAdded), c(ToolRemoved), c(TitleChanged)]),
            Some(ChangeClass::Breaking)
        );
    }

    #[test]
    fn serde_shape_round_trips() {
        let change = Change::new(
            ParamTypeChanged,
            "weather",
            Some("location.city".into()),
            "type string → integer",
        );
        let json = serde_json::to_value(&change).unwrap();
        assert_eq!(
            json,
            json!({"class": "breaking", "kind": "param_type_changed", "tool": "weather",
                   "path": "location.city", "detail": "type string → integer"})
        );
        assert_eq!(serde_json::from_value::<Change>(json).unwrap(), change);
        let tool_level = Change::new(ToolAdded, "t", None, "tool added");
        let json = serde_json::to_value(&tool_level).unwrap();
        assert_eq!(json["path"], Value::Null);
        assert_eq!(json["class"], "additive");
        assert_eq!(serde_json::from_value::<Change>(json).unwrap(), tool_level);
        // `path` may be left out.
        let parsed: Change = serde_json::from_value(
            json!({"class": "cosmetic", "kind": "description_changed", "tool": "t", "detail": "d"}),
        )
        .unwrap();
        assert_eq!(parsed.path, None);
        assert_eq!(
            serde_json::to_value(ChangeClass::Cosmetic).unwrap(),
            "cosmetic"
        );
        assert_eq!(
            serde_json::to_value(EnumValuesAdded).unwrap(),
            "enum_values_added"
        );
    }
}
