//! Server settings: command-line flags, each with an environment fallback.
//!
//! Where to listen and where the compiled site lives are Leptos' own settings (`LEPTOS_SITE_ADDR`,
//! `LEPTOS_SITE_ROOT`, … or `[package.metadata.leptos]` in Cargo.toml); this covers the rest.

use clap::Parser;

#[derive(Clone, Debug, Parser)]
#[command(name = "groupchat", version, about = "A real-time group chat server")]
pub struct Config {
    /// Frames a connection may have waiting to be sent before it counts as too slow and is disconnected
    /// (close code 1013). Bounds the memory one stalled client can pin.
    #[arg(long, env = "CHAT_QUEUE_FRAMES", default_value_t = 256)]
    pub queue_frames: usize,

    /// Largest WebSocket message a client may send, in bytes.
    #[arg(long, env = "CHAT_MAX_MESSAGE_BYTES", default_value_t = 64 * 1024)]
    pub max_message_bytes: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config::parse_from(["groupchat"])
    }
}
