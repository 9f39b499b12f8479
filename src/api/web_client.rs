//! The web client (DESIGN.md §16): build-less ES modules and one style
//! sheet under `web/`, compiled into the binary and served at `/`.
//!
//! The files are embedded with `include_bytes!` through the [`ASSETS`]
//! table rather than a crate such as rust-embed: there are about twenty files,
//! the table is the whole mechanism (a unit test checks it lists every file
//! of `web/`), and it costs no proc macro or dependency in a build that is
//! already slow. Their version is a hash of their content, computed once:
//! assets live under `/assets/<version>/…`, so a client never mixes two
//! releases' modules and every asset may be cached for a year
//! (`immutable`); the page at `/` names the version and is never stored.
//!
//! Navigation inside the client is in the URL's fragment (`/#/patients/…`):
//! it never reaches the server, its logs or a proxy's. The client calls
//! only the public API, like any other client.

use std::sync::OnceLock;

use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, ResponseError, web};
use sha2::{Digest, Sha256};

use crate::error::ApiError;

/// Where the assets are served, below their version.
pub const ASSETS_PATH: &str = "/assets";

/// The policy of the client's pages and assets: only this origin's scripts,
/// styles and API; no inline script or style, no plugin, no framing.
pub const WEB_CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; font-src 'self'; object-src 'none'; \
     base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// One embedded file: its name under `web/`, its content type, its bytes.
pub struct Asset {
    pub name: &'static str,
    pub content_type: &'static str,
    pub bytes: &'static [u8],
}

macro_rules! assets {
    ($( $name:literal => $type:expr ),* $(,)?) => {
        /// Every file of `web/` but `index.html`.
        pub const ASSETS: &[Asset] = &[
            $( Asset {
                name: $name,
                content_type: $type,
                bytes: include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/web/", $name)),
            }, )*
        ];
    };
}

/// Modules must be served as JavaScript, or the browser refuses them.
const JS: &str = "text/javascript; charset=utf-8";

assets! {
    "app.js" => JS,
    "api.js" => JS,
    "i18n.js" => JS,
    "i18n/fr.js" => JS,
    "i18n/en.js" => JS,
    "screens/sign_in.js" => JS,
    "screens/inbox.js" => JS,
    "screens/patients.js" => JS,
    "screens/pharmacy.js" => JS,
    "screens/handovers.js" => JS,
    "screens/consultations.js" => JS,
    "screens/plans.js" => JS,
    "screens/plan_editor.js" => JS,
    "screens/common.js" => JS,
    "style.css" => "text/css; charset=utf-8",
    "icon.svg" => "image/svg+xml",
    "vendor/htm-preact-standalone.mjs" => JS,
    "vendor/LICENSES.txt" => "text/plain; charset=utf-8",
}

/// The page every client starts from; `{{VERSION}}` names the assets.
const INDEX: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/web/index.html"));

/// The assets' version: the first 16 hex digits of a hash of all of them.
pub fn version() -> &'static str {
    static VERSION: OnceLock<String> = OnceLock::new();
    VERSION.get_or_init(|| {
        let mut hash = Sha256::new();
        hash.update(INDEX.as_bytes());
        for asset in ASSETS {
            hash.update(asset.name.as_bytes());
            hash.update([0]);
            hash.update(asset.bytes);
        }
        hex::encode(hash.finalize())[..16].to_owned()
    })
}

fn index_html() -> &'static str {
    static PAGE: OnceLock<String> = OnceLock::new();
    PAGE.get_or_init(|| INDEX.replace("{{VERSION}}", version()))
}

/// Registers `/` and the assets. Called after the API so that nothing here
/// can shadow `/api`, `/fhir`, `/docs`: both paths are exact.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/", web::get().to(index)).route(
        &format!("{ASSETS_PATH}/{{version}}/{{name:.+}}"),
        web::get().to(asset),
    );
}

/// Whether a path is the client's: its pages get [`WEB_CSP`].
pub fn is_web_path(path: &str) -> bool {
    path == "/"
        || path
            .strip_prefix(ASSETS_PATH)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// The client's page. Never stored: it is the door to patient data, and it
/// must name the current assets.
async fn index() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(index_html())
}

/// One asset of the current version; an old version's path is 404 (the page
/// that named it is gone too: it was never stored).
async fn asset(req: HttpRequest, path: web::Path<(String, String)>) -> HttpResponse {
    let (asked_version, name) = path.into_inner();
    let Some(found) = ASSETS.iter().find(|a| a.name == name) else {
        return not_found();
    };
    if asked_version != version() {
        return not_found();
    }
    let etag = format!("\"{}-{}\"", version(), short_hash(found.bytes));
    let fresh = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    let mut res = if fresh {
        HttpResponse::NotModified()
    } else {
        HttpResponse::Ok()
    };
    res.insert_header((header::CACHE_CONTROL, "public, max-age=31536000, immutable"))
        .insert_header((header::ETAG, etag));
    if fresh {
        return res.finish();
    }
    res.insert_header((
        header::CONTENT_TYPE,
        HeaderValue::from_static(found.content_type),
    ))
    .body(dev_override(found.name).unwrap_or_else(|| found.bytes.to_vec()))
}

/// Debug builds only: with `RELAIS_WEB_DEV_DIR` set, assets are read from
/// that directory at each request, so editing the client needs no rebuild.
/// Release builds always serve what was compiled in.
fn dev_override(name: &str) -> Option<Vec<u8>> {
    if !cfg!(debug_assertions) {
        return None;
    }
    let dir = std::env::var_os("RELAIS_WEB_DEV_DIR")?;
    std::fs::read(std::path::Path::new(&dir).join(name)).ok()
}

fn short_hash(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))[..16].to_owned()
}

/// A problem+json 404 like every other, never cached: the next release may
/// have the name.
fn not_found() -> HttpResponse {
    let mut res = ApiError::NotFound("no such asset in this version".into()).error_response();
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file added to `web/` but not to the table would be a 404 in the
    /// browser and nowhere else.
    #[test]
    fn every_file_of_web_is_embedded() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("web");
        let mut files = Vec::new();
        let mut dirs = vec![root.clone()];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    dirs.push(path);
                } else {
                    let rel = path.strip_prefix(&root).unwrap().to_string_lossy();
                    files.push(rel.replace('\\', "/"));
                }
            }
        }
        files.retain(|f| f != "index.html");
        files.sort();
        let mut listed: Vec<String> = ASSETS.iter().map(|a| a.name.to_owned()).collect();
        listed.sort();
        assert_eq!(files, listed);
    }

    #[test]
    fn scripts_are_served_as_javascript() {
        for asset in ASSETS {
            if asset.name.ends_with(".js") || asset.name.ends_with(".mjs") {
                assert_eq!(asset.content_type, JS, "{}", asset.name);
            }
        }
    }

    #[test]
    fn the_page_names_the_current_version() {
        assert!(index_html().contains(&format!("{ASSETS_PATH}/{}/app.js", version())));
        assert!(!index_html().contains("{{VERSION}}"));
    }
}
