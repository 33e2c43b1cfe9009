//! The upload worker: the pipeline's HTTP front door.
//!
//! `POST /images` records an image in D1, streams it into R2, enqueues an
//! [`shared::ImageMessage`] and answers `202`; `GET /images/{id}` reports the image's
//! status and tags. `GET /images` searches, `GET /tags` counts tags, and
//! `GET /images/{id}/content` and `DELETE /images/{id}` serve and delete an image
//! ([`manage`]). Every API request is authenticated first ([`auth`]: the operator key, a
//! client key, or an anonymous caller where allowed), and a client sees only its own images;
//! the operator manages client keys under `/admin/keys` ([`admin`]) and watches the service
//! on `/admin` ([`dashboard`]). Routing, validation and
//! error codes live in [`shared::api`]; this crate only does the I/O.

mod admin;
mod auth;
mod body;
mod crypto;
mod cursor_mac;
mod dashboard;
mod detach;
mod handlers;
mod http;
mod live;
mod manage;
mod problem;
mod r2;
mod settings;
mod store;

use worker::event;

#[event(start)]
fn start() {
    console_error_panic_hook::set_once();
}

/// The fetch entry point. `#[event(fetch)]` writes a wrapper that logs an `Err` with
/// `console_error!`, which only this module allows: the handler never returns one (every
/// error is a JSON response, logged through `edge::log`).
mod entry {
    #![allow(clippy::disallowed_macros)]

    use worker::{event, Context, Env, Request, Response, Result};

    #[event(fetch)]
    async fn fetch(req: Request, env: Env, ctx: Context) -> Result<Response> {
        Ok(crate::handlers::handle(req, env, ctx).await)
    }
}
