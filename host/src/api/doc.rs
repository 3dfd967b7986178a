//! The OpenAPI document, generated from the handlers' and types' annotations, with the
//! links between operations that create, read, change and delete a resource added, so that
//! a client (or a fuzzer's stateful phase) can follow them.

use serde_json::{Value, json};
use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "wvs",
        description = "The wvs control API: virtual services, real servers, plugins, connections and counters. \
            Every operation but this document needs `Authorization: Bearer TOKEN`, reads \
            included (the tables hold client addresses); each change is applied all or nothing. \
            Errors are `{\"error\": \"...\"}`: 400 for a request this document does not allow, \
            401 without the token, 404 for what does not exist, 409 for a well-formed request \
            that conflicts with the running configuration or with itself, 413 and 415 for \
            bodies too large or of another type.",
    ),
    paths(
        super::openapi,
        super::list_services,
        super::add_service,
        super::clear,
        super::get_service,
        super::edit_service,
        super::delete_service,
        super::add_real,
        super::edit_real,
        super::delete_real,
        super::batch,
        super::list_plugins,
        super::put_plugin,
        super::delete_plugin,
        super::list_connections,
        super::stats,
        super::zero_all,
        super::zero_service,
        super::info,
        super::get_timeouts,
        super::put_timeouts,
        super::get_sysctl,
        super::put_sysctl,
        super::get_settings,
        super::put_settings,
        super::list_daemons,
        super::start_daemon,
        super::stop_daemon,
        super::get_mark_rules,
        super::put_mark_rules,
    ),
    components(schemas(
        crate::control::edit::Change,
        crate::schema::ServiceFilter,
        crate::schema::ConnState,
        crate::schema::ConnCursor,
        crate::schema::PluginName,
        crate::schema::RealAddr,
        crate::schema::VipPort,
        crate::schema::ProtocolName,
    )),
    modifiers(&Bearer),
)]
struct Doc;

struct Bearer;

impl utoipa::Modify for Bearer {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        let c = api.components.get_or_insert_with(Default::default);
        c.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The document, as served at `/api/v1/openapi.json`: utoipa's, with what it cannot say.
pub fn document() -> Value {
    let mut doc = serde_json::to_value(Doc::openapi()).unwrap_or(Value::Null);
    strict_changes(&mut doc);
    add_links(&mut doc);
    wasm_upload(&mut doc);
    bearer_everywhere(&mut doc);
    tag_by_subject(&mut doc);
    doc
}

/// A change is refused with a field it does not know (serde's deny_unknown_fields),
/// which utoipa does not carry over to the variants of a tagged enum.
fn strict_changes(doc: &mut Value) {
    if let Some(variants) = doc
        .pointer_mut("/components/schemas/Change/oneOf")
        .and_then(Value::as_array_mut)
    {
        for v in variants {
            if let Some(o) = v.as_object_mut() {
                o.insert("additionalProperties".into(), Value::Bool(false));
            }
        }
    }
}

/// The links from what a creation answers to the operations on what it created.
fn add_links(doc: &mut Value) {
    let service = json!({
        "proto": "$response.body#/protocol",
        "addr": "$response.body#/address",
    });
    let real = json!({
        "proto": "$request.path.proto",
        "addr": "$request.path.addr",
        "real": "$request.body#/address",
    });
    let plugin = json!({ "name": "$request.path.name" });
    let links = [
        (
            "/api/v1/plugins/{name}",
            "put",
            "201",
            vec![("DeletePlugin", "delete_plugin", &plugin)],
        ),
        (
            "/api/v1/services",
            "post",
            "201",
            vec![
                ("GetService", "get_service", &service),
                ("EditService", "edit_service", &service),
                ("DeleteService", "delete_service", &service),
                ("AddReal", "add_real", &service),
            ],
        ),
        (
            "/api/v1/services/{proto}/{addr}/reals",
            "post",
            "201",
            vec![
                ("EditReal", "edit_real", &real),
                ("DeleteReal", "delete_real", &real),
            ],
        ),
    ];
    for (path, method, status, to) in links {
        let Some(resp) = doc
            .pointer_mut(&format!(
                "/paths/{}/{method}/responses/{status}",
                path.replace('~', "~0").replace('/', "~1")
            ))
            .and_then(Value::as_object_mut)
        else {
            continue;
        };
        let mut map = serde_json::Map::new();
        for (name, op, params) in to {
            map.insert(
                name.into(),
                json!({ "operationId": op, "parameters": params }),
            );
        }
        resp.insert("links".into(), Value::Object(map));
    }
}

/// A plugin is uploaded as the module's bytes (utoipa would say an array of numbers).
fn wasm_upload(doc: &mut Value) {
    if let Some(body) = doc
        .pointer_mut("/paths/~1api~1v1~1plugins~1{name}/put/requestBody")
        .and_then(Value::as_object_mut)
    {
        let binary = json!({ "schema": { "type": "string", "format": "binary" } });
        body.insert(
            "content".into(),
            json!({ "application/wasm": binary, "application/octet-stream": binary }),
        );
    }
}

/// Every operation but this document's needs the token, reads included (the tables hold
/// client addresses): said once here rather than on each handler.
fn bearer_everywhere(doc: &mut Value) {
    if let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) {
        for (path, item) in paths.iter_mut() {
            if path == "/api/v1/openapi.json" {
                continue;
            }
            for op in item
                .as_object_mut()
                .into_iter()
                .flat_map(|o| o.values_mut())
                .filter_map(Value::as_object_mut)
            {
                op.insert("security".into(), json!([{ "bearer": [] }]));
                if let Some(r) = op.get_mut("responses").and_then(Value::as_object_mut) {
                    r.entry("401").or_insert_with(|| {
                        json!({
                            "description": "No bearer token, or a wrong one",
                            "content": { "application/json": {
                                "schema": { "$ref": "#/components/schemas/ErrorBody" } } }
                        })
                    });
                }
            }
        }
    }
}

/// The operations grouped by what they are about (utoipa would name them all after the
/// module, "super"), which is also how generated clients name their modules.
fn tag_by_subject(doc: &mut Value) {
    if let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) {
        for (path, item) in paths.iter_mut() {
            let tag = match path.trim_start_matches("/api/v1/") {
                p if p.contains("/reals") => "reals",
                p if p.starts_with("services") => "services",
                p if p.starts_with("plugins") => "plugins",
                p if p.starts_with("connections") => "connections",
                p if p.starts_with("batch") => "batch",
                _ => "about",
            };
            for op in item
                .as_object_mut()
                .into_iter()
                .flat_map(|o| o.values_mut())
            {
                if let Some(o) = op.as_object_mut() {
                    o.insert("tags".into(), json!([tag]));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn documents_every_endpoint() {
        let json = super::document();
        for p in [
            "/api/v1/services",
            "/api/v1/services/{proto}/{addr}",
            "/api/v1/services/{proto}/{addr}/reals/{real}",
            "/api/v1/batch",
            "/api/v1/plugins/{name}",
            "/api/v1/connections",
            "/api/v1/stats",
            "/api/v1/timeouts",
        ] {
            assert!(json["paths"][p].is_object(), "{p} missing");
        }
        assert!(json["components"]["schemas"]["ServiceDef"].is_object());
        assert!(json["components"]["securitySchemes"]["bearer"].is_object());
        for (p, m) in [("/api/v1/connections", "get"), ("/api/v1/stats", "get")] {
            let op = &json["paths"][p][m];
            assert_eq!(op["security"][0]["bearer"], serde_json::json!([]), "{p}");
            assert!(op["responses"]["401"].is_object(), "{p}");
        }
        assert!(json["paths"]["/api/v1/openapi.json"]["get"]["security"].is_null());
        let links = &json["paths"]["/api/v1/services"]["post"]["responses"]["201"]["links"];
        assert_eq!(links["GetService"]["operationId"], "get_service");
    }

    #[test]
    fn query_parameters_are_in_the_query() {
        let json = super::document();
        for p in &json["paths"]["/api/v1/connections"]["get"]["parameters"]
            .as_array()
            .expect("parameters")[..]
        {
            assert_eq!(p["in"], "query", "{p}");
        }
    }
}
