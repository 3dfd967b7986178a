//! The OpenAPI document, generated from the handlers' and types' annotations.

use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "wvs",
        description = "The wvs control API: virtual services, real servers, plugins, connections and counters. \
            Changes need `Authorization: Bearer TOKEN`; each one is applied all or nothing.",
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
        super::info,
    ),
    components(schemas(crate::control::edit::Change)),
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

/// The document.
pub fn document() -> utoipa::openapi::OpenApi {
    Doc::openapi()
}

#[cfg(test)]
mod tests {
    #[test]
    fn documents_every_endpoint() {
        let doc = super::document();
        let json = serde_json::to_value(&doc).unwrap();
        for p in [
            "/api/v1/services",
            "/api/v1/services/{proto}/{addr}",
            "/api/v1/services/{proto}/{addr}/reals/{real}",
            "/api/v1/batch",
            "/api/v1/plugins/{name}",
            "/api/v1/connections",
            "/api/v1/stats",
        ] {
            assert!(json["paths"][p].is_object(), "{p} missing");
        }
        assert!(json["components"]["schemas"]["ServiceDef"].is_object());
        assert!(json["components"]["securitySchemes"]["bearer"].is_object());
    }
}
