//! Integration tests: hubferry against a real registry, CDN and token issuer on 127.0.0.1.

mod access_control;
mod config_cli;
mod containerd;
mod failures;
mod fakes;
mod faults;
mod header_policy;
mod hostile;
mod hostile_upstream;
mod hubferry;
mod image_policy;
mod landing;
mod limits;
mod log_forgery;
mod managed_auth;
mod multireg;
mod operations;
mod pull;
mod redirects;
mod registry_api;
mod relay;
mod skopeo;
mod streaming;
mod tls_listener;
mod world;
mod world_smoke;
