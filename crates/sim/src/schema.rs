//! RFC 7643 schemas of the resources the simulator serves: the single source for the `/Schemas`
//! endpoint, attribute-name canonicalisation, case-exactness in filters and type checks on writes.

use serde_json::{Map, Value, json};

use crate::error::ScimError;

/// Core User schema URN.
pub const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
/// Core Group schema URN.
pub const GROUP_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
/// Enterprise User extension URN (RFC 7643 §4.3).
pub const ENTERPRISE_USER_SCHEMA: &str =
    "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
/// ListResponse message URN.
pub const LIST_RESPONSE_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:ListResponse";
/// PatchOp message URN.
pub const PATCH_OP_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";

/// The two resource types a SCIM tenant holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// `/Users`.
    User,
    /// `/Groups`.
    Group,
}

impl Kind {
    /// `meta.resourceType` and the ResourceType id.
    pub fn resource_type(self) -> &'static str {
        match self {
            Kind::User => "User",
            Kind::Group => "Group",
        }
    }

    /// The endpoint segment (`Users`, `Groups`).
    pub fn endpoint(self) -> &'static str {
        match self {
            Kind::User => "Users",
            Kind::Group => "Groups",
        }
    }

    /// The core schema URN.
    pub fn core_schema(self) -> &'static str {
        match self {
            Kind::User => USER_SCHEMA,
            Kind::Group => GROUP_SCHEMA,
        }
    }

    /// The attribute every resource of this kind must have (and that is unique within a tenant).
    pub fn required_attr(self) -> &'static str {
        match self {
            Kind::User => "userName",
            Kind::Group => "displayName",
        }
    }

    /// Attribute definitions of the core schema.
    pub fn attrs(self) -> &'static [AttrDef] {
        match self {
            Kind::User => USER_ATTRS,
            Kind::Group => GROUP_ATTRS,
        }
    }

    /// Extension schemas this kind may carry.
    pub fn extensions(self) -> &'static [(&'static str, &'static [AttrDef])] {
        match self {
            Kind::User => &[(ENTERPRISE_USER_SCHEMA, ENTERPRISE_ATTRS)],
            Kind::Group => &[],
        }
    }
}

/// RFC 7643 §2.3 attribute data types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ty {
    /// JSON string.
    String,
    /// JSON boolean.
    Boolean,
    /// JSON object with sub-attributes.
    Complex,
    /// URI string.
    Reference,
    /// RFC 3339 string.
    DateTime,
    /// Base64 string.
    Binary,
}

impl Ty {
    fn name(self) -> &'static str {
        match self {
            Ty::String => "string",
            Ty::Boolean => "boolean",
            Ty::Complex => "complex",
            Ty::Reference => "reference",
            Ty::DateTime => "dateTime",
            Ty::Binary => "binary",
        }
    }
}

/// One attribute definition (RFC 7643 §7).
#[derive(Debug, Clone, Copy)]
pub struct AttrDef {
    /// Canonical attribute name.
    pub name: &'static str,
    /// Data type.
    pub ty: Ty,
    /// Multi-valued (a JSON array).
    pub multi: bool,
    /// Must be present on every resource.
    pub required: bool,
    /// Filters compare it case-sensitively.
    pub case_exact: bool,
    /// readWrite, readOnly, immutable or writeOnly.
    pub mutability: &'static str,
    /// always, never, default or request.
    pub returned: &'static str,
    /// none, server or global.
    pub uniqueness: &'static str,
    /// Sub-attributes of a complex attribute.
    pub sub: &'static [AttrDef],
    /// `referenceTypes` of a reference attribute.
    pub refs: &'static [&'static str],
}

const fn a(name: &'static str, ty: Ty) -> AttrDef {
    AttrDef {
        name,
        ty,
        multi: false,
        required: false,
        case_exact: false,
        mutability: "readWrite",
        returned: "default",
        uniqueness: "none",
        sub: &[],
        refs: &[],
    }
}

const fn s(name: &'static str) -> AttrDef {
    a(name, Ty::String)
}

impl AttrDef {
    const fn multi(mut self) -> Self {
        self.multi = true;
        self
    }
    const fn required(mut self) -> Self {
        self.required = true;
        self
    }
    const fn mutability(mut self, m: &'static str) -> Self {
        self.mutability = m;
        self
    }
    const fn returned(mut self, r: &'static str) -> Self {
        self.returned = r;
        self
    }
    const fn unique(mut self) -> Self {
        self.uniqueness = "server";
        self
    }
    const fn complex(mut self, sub: &'static [AttrDef]) -> Self {
        self.ty = Ty::Complex;
        self.sub = sub;
        self
    }
    const fn refs(mut self, refs: &'static [&'static str]) -> Self {
        self.ty = Ty::Reference;
        self.refs = refs;
        self
    }

    /// The definition of a sub-attribute, matched case-insensitively.
    pub fn sub_attr(&self, name: &str) -> Option<&'static AttrDef> {
        self.sub.iter().find(|d| d.name.eq_ignore_ascii_case(name))
    }
}

const MULTI_SUB: &[AttrDef] = &[
    s("value"),
    s("display"),
    s("type"),
    a("primary", Ty::Boolean),
];
const NAME_SUB: &[AttrDef] = &[
    s("formatted"),
    s("familyName"),
    s("givenName"),
    s("middleName"),
    s("honorificPrefix"),
    s("honorificSuffix"),
];
const ADDRESS_SUB: &[AttrDef] = &[
    s("formatted"),
    s("streetAddress"),
    s("locality"),
    s("region"),
    s("postalCode"),
    s("country"),
    s("type"),
    a("primary", Ty::Boolean),
];
const USER_GROUPS_SUB: &[AttrDef] = &[
    s("value").mutability("readOnly"),
    s("$ref").refs(&["User", "Group"]).mutability("readOnly"),
    s("display").mutability("readOnly"),
    s("type").mutability("readOnly"),
];
const CERT_SUB: &[AttrDef] = &[
    a("value", Ty::Binary),
    s("display"),
    s("type"),
    a("primary", Ty::Boolean),
];

/// Core User attributes (RFC 7643 §4.1).
pub const USER_ATTRS: &[AttrDef] = &[
    s("userName").required().unique(),
    s("name").complex(NAME_SUB),
    s("displayName"),
    s("nickName"),
    s("profileUrl").refs(&["external"]),
    s("title"),
    s("userType"),
    s("preferredLanguage"),
    s("locale"),
    s("timezone"),
    a("active", Ty::Boolean),
    s("password").mutability("writeOnly").returned("never"),
    s("emails").multi().complex(MULTI_SUB),
    s("phoneNumbers").multi().complex(MULTI_SUB),
    s("ims").multi().complex(MULTI_SUB),
    s("photos").multi().complex(MULTI_SUB),
    s("addresses").multi().complex(ADDRESS_SUB),
    s("groups")
        .multi()
        .complex(USER_GROUPS_SUB)
        .mutability("readOnly"),
    s("entitlements").multi().complex(MULTI_SUB),
    s("roles").multi().complex(MULTI_SUB),
    s("x509Certificates").multi().complex(CERT_SUB),
];

const MEMBER_SUB: &[AttrDef] = &[
    s("value").mutability("immutable"),
    s("$ref").refs(&["User", "Group"]).mutability("immutable"),
    s("type").mutability("immutable"),
    s("display"),
];

/// Core Group attributes (RFC 7643 §4.2).
pub const GROUP_ATTRS: &[AttrDef] = &[
    s("displayName").required().unique(),
    s("members").multi().complex(MEMBER_SUB),
];

const MANAGER_SUB: &[AttrDef] = &[
    s("value"),
    s("$ref").refs(&["User"]),
    s("displayName").mutability("readOnly"),
];

/// Enterprise User extension attributes (RFC 7643 §4.3).
pub const ENTERPRISE_ATTRS: &[AttrDef] = &[
    s("employeeNumber"),
    s("costCenter"),
    s("organization"),
    s("division"),
    s("department"),
    s("manager").complex(MANAGER_SUB),
];

/// Common attributes (RFC 7643 §3.1), present on every resource and managed by the server.
const COMMON: &[&str] = &["id", "externalId", "meta", "schemas"];

/// Is this URN the core schema of `kind` (case-insensitive)?
pub fn is_core(kind: Kind, urn: &str) -> bool {
    urn.eq_ignore_ascii_case(kind.core_schema())
}

/// The canonical spelling and definitions of an extension URN of `kind`.
pub fn extension(kind: Kind, urn: &str) -> Option<(&'static str, &'static [AttrDef])> {
    kind.extensions()
        .iter()
        .copied()
        .find(|(u, _)| u.eq_ignore_ascii_case(urn))
}

/// The definition of a top-level attribute (core when `schema` is `None`).
pub fn attr_def(kind: Kind, schema: Option<&str>, name: &str) -> Option<&'static AttrDef> {
    let attrs = match schema {
        None => kind.attrs(),
        Some(urn) if is_core(kind, urn) => kind.attrs(),
        Some(urn) => extension(kind, urn)?.1,
    };
    attrs.iter().find(|d| d.name.eq_ignore_ascii_case(name))
}

/// Whether a filter on `attr[.sub]` compares strings case-sensitively.
pub fn case_exact(kind: Kind, schema: Option<&str>, attr: &str, sub: Option<&str>) -> bool {
    if schema.is_none()
        && (attr.eq_ignore_ascii_case("id") || attr.eq_ignore_ascii_case("externalId"))
    {
        return true;
    }
    if schema.is_none() && attr.eq_ignore_ascii_case("meta") {
        return sub.is_some_and(|s| {
            s.eq_ignore_ascii_case("version") || s.eq_ignore_ascii_case("location")
        });
    }
    let Some(def) = attr_def(kind, schema, attr) else {
        return false;
    };
    match sub.and_then(|s| def.sub_attr(s)) {
        Some(sub) => sub.case_exact,
        None => def.case_exact,
    }
}

fn rename_keys(obj: &mut Map<String, Value>, defs: &[AttrDef]) {
    let keys: Vec<String> = obj.keys().cloned().collect();
    for key in keys {
        let Some(def) = defs.iter().find(|d| d.name.eq_ignore_ascii_case(&key)) else {
            continue;
        };
        if def.name != key
            && let Some(v) = obj.remove(&key)
        {
            obj.insert(def.name.to_string(), v);
        }
        if def.ty == Ty::Complex
            && let Some(v) = obj.get_mut(def.name)
        {
            match v {
                Value::Object(inner) => rename_keys(inner, def.sub),
                Value::Array(items) => {
                    for item in items {
                        if let Value::Object(inner) = item {
                            rename_keys(inner, def.sub);
                        }
                    }
                }
                _ => {}
            }
        }
    }
}

/// Rewrites attribute names to their canonical case (`USERNAME` → `userName`), extension keys to
/// their canonical URN, and recomputes `schemas` (core + extensions present).
pub fn canonicalize(kind: Kind, obj: &mut Map<String, Value>) {
    let keys: Vec<String> = obj.keys().cloned().collect();
    for key in keys {
        if let Some(common) = COMMON.iter().find(|c| c.eq_ignore_ascii_case(&key))
            && *common != key
            && let Some(v) = obj.remove(&key)
        {
            obj.insert((*common).to_string(), v);
        }
        if let Some((urn, defs)) = extension(kind, &key)
            && let Some(mut v) = obj.remove(&key)
        {
            if let Value::Object(inner) = &mut v {
                rename_keys(inner, defs);
            }
            obj.insert(urn.to_string(), v);
        }
    }
    rename_keys(obj, kind.attrs());
    let mut schemas = vec![Value::from(kind.core_schema())];
    for (urn, _) in kind.extensions() {
        if obj
            .get(*urn)
            .is_some_and(|v| v.as_object().is_some_and(|o| !o.is_empty()))
        {
            schemas.push(Value::from(*urn));
        } else {
            obj.remove(*urn);
        }
    }
    obj.insert("schemas".into(), Value::Array(schemas));
}

fn check_type(path: &str, def: &AttrDef, v: &Value) -> Result<(), ScimError> {
    if v.is_null() {
        return Ok(());
    }
    let ok = match def.ty {
        Ty::String | Ty::Reference | Ty::DateTime | Ty::Binary => v.is_string(),
        Ty::Boolean => v.is_boolean(),
        Ty::Complex => v.is_object(),
    };
    if !ok {
        return Err(ScimError::invalid_value(format!(
            "attribute '{path}' must be a {}, got {}",
            def.ty.name(),
            type_name(v)
        )));
    }
    if let (Ty::Complex, Value::Object(inner)) = (def.ty, v) {
        for (k, sv) in inner {
            if let Some(sd) = def.sub_attr(k) {
                check_type(&format!("{path}.{}", sd.name), sd, sv)?;
            }
        }
    }
    Ok(())
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn check_attrs(prefix: &str, obj: &Map<String, Value>, defs: &[AttrDef]) -> Result<(), ScimError> {
    for def in defs {
        let path = format!("{prefix}{}", def.name);
        let value = obj.get(def.name);
        if def.required {
            let present = match value {
                Some(Value::String(s)) => !s.trim().is_empty(),
                Some(Value::Null) | None => false,
                Some(_) => true,
            };
            if !present {
                return Err(ScimError::invalid_value(format!(
                    "attribute '{path}' is required"
                )));
            }
        }
        let Some(value) = value else { continue };
        if def.multi {
            match value {
                Value::Array(items) => {
                    for item in items {
                        check_type(&path, def, item)?;
                    }
                }
                Value::Null => {}
                other => {
                    return Err(ScimError::invalid_value(format!(
                        "attribute '{path}' is multi-valued and must be an array, got {}",
                        type_name(other)
                    )));
                }
            }
        } else {
            check_type(&path, def, value)?;
        }
    }
    Ok(())
}

/// Checks a canonicalised resource body: required attributes present, known attributes typed right.
pub fn validate(kind: Kind, obj: &Map<String, Value>) -> Result<(), ScimError> {
    check_attrs("", obj, kind.attrs())?;
    for (urn, defs) in kind.extensions() {
        if let Some(ext) = obj.get(*urn) {
            let Value::Object(ext) = ext else {
                return Err(ScimError::invalid_value(format!(
                    "extension '{urn}' must be an object"
                )));
            };
            check_attrs(&format!("{urn}:"), ext, defs)?;
        }
    }
    if let Some(ext) = obj.get("externalId")
        && !ext.is_string()
        && !ext.is_null()
    {
        return Err(ScimError::invalid_value(
            "attribute 'externalId' must be a string",
        ));
    }
    Ok(())
}

fn attr_json(def: &AttrDef) -> Value {
    let mut v = json!({
        "name": def.name,
        "type": def.ty.name(),
        "multiValued": def.multi,
        "description": format!("{} attribute", def.name),
        "required": def.required,
        "mutability": def.mutability,
        "returned": def.returned,
    });
    if let Some(obj) = v.as_object_mut() {
        if def.ty != Ty::Complex && def.ty != Ty::Boolean {
            obj.insert("caseExact".into(), def.case_exact.into());
            obj.insert("uniqueness".into(), def.uniqueness.into());
        }
        if def.ty == Ty::Reference {
            obj.insert("referenceTypes".into(), json!(def.refs));
        }
        if def.ty == Ty::Complex {
            obj.insert(
                "subAttributes".into(),
                def.sub.iter().map(attr_json).collect(),
            );
        }
    }
    v
}

fn schema_json(id: &str, name: &str, description: &str, defs: &[AttrDef], base: &str) -> Value {
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Schema"],
        "id": id,
        "name": name,
        "description": description,
        "attributes": defs.iter().map(attr_json).collect::<Vec<_>>(),
        "meta": { "resourceType": "Schema", "location": format!("{base}/Schemas/{id}") },
    })
}

/// Every schema the tenant serves, as `/Schemas` resources.
pub fn schemas_json(base: &str) -> Vec<Value> {
    vec![
        schema_json(USER_SCHEMA, "User", "User Account", USER_ATTRS, base),
        schema_json(GROUP_SCHEMA, "Group", "Group", GROUP_ATTRS, base),
        schema_json(
            ENTERPRISE_USER_SCHEMA,
            "EnterpriseUser",
            "Enterprise User",
            ENTERPRISE_ATTRS,
            base,
        ),
    ]
}

/// Both resource types, as `/ResourceTypes` resources.
pub fn resource_types_json(base: &str) -> Vec<Value> {
    vec![
        json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ResourceType"],
            "id": "User",
            "name": "User",
            "endpoint": "/Users",
            "description": "User Account",
            "schema": USER_SCHEMA,
            "schemaExtensions": [{ "schema": ENTERPRISE_USER_SCHEMA, "required": false }],
            "meta": { "resourceType": "ResourceType", "location": format!("{base}/ResourceTypes/User") },
        }),
        json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ResourceType"],
            "id": "Group",
            "name": "Group",
            "endpoint": "/Groups",
            "description": "Group",
            "schema": GROUP_SCHEMA,
            "schemaExtensions": [],
            "meta": { "resourceType": "ResourceType", "location": format!("{base}/ResourceTypes/Group") },
        }),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonicalize_fixes_case_and_schemas() {
        let mut obj = json!({
            "USERNAME": "a",
            "Name": {"GIVENNAME": "x"},
            "Emails": [{"VALUE": "a@b"}],
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:user": {"EMPLOYEENUMBER": "7"},
        });
        let Some(obj) = obj.as_object_mut() else {
            panic!("object")
        };
        canonicalize(Kind::User, obj);
        assert_eq!(obj["userName"], "a");
        assert_eq!(obj["name"]["givenName"], "x");
        assert_eq!(obj["emails"][0]["value"], "a@b");
        assert_eq!(obj[ENTERPRISE_USER_SCHEMA]["employeeNumber"], "7");
        assert_eq!(obj["schemas"], json!([USER_SCHEMA, ENTERPRISE_USER_SCHEMA]));
    }

    #[test]
    fn validate_names_the_attribute() {
        let obj = json!({"displayName": "x"});
        let Some(obj) = obj.as_object() else {
            panic!("object")
        };
        let err = validate(Kind::User, obj)
            .err()
            .map(|e| e.detail)
            .unwrap_or_default();
        assert!(err.contains("userName"), "{err}");
        let obj = json!({"userName": "x", "active": "yes"});
        let Some(obj) = obj.as_object() else {
            panic!("object")
        };
        let err = validate(Kind::User, obj)
            .err()
            .map(|e| e.detail)
            .unwrap_or_default();
        assert!(err.contains("active"), "{err}");
    }
}
