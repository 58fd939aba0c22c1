pub mod config;
pub mod position;
pub mod route;
pub mod secret;
