//! The `logging` interface: plugin messages into the host's `tracing` log,
//! tagged with the plugin and the work item.

use crate::bindings::capabilities::logging::{Host, Level};

use super::CapabilityContext;

/// Longest message kept; the rest is cut off with a marker.
pub const MAX_LOG_MESSAGE_BYTES: usize = 4096;

impl Host for CapabilityContext {
    async fn log(&mut self, level: Level, message: String) {
        // Log messages count against the outgoing budget too; a plugin over it
        // simply loses the message (logging cannot fail in the WIT contract).
        if self.traffic.send_out(message.len() as u64).is_err() {
            return;
        }
        let mut message = message;
        if message.len() > MAX_LOG_MESSAGE_BYTES {
            let mut cut = MAX_LOG_MESSAGE_BYTES;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push_str(" …[cut]");
        }
        let plugin = self.grant.plugin.as_str();
        let item = self.item_id.as_str();
        match level {
            Level::Trace => tracing::trace!(target: "techne::plugin", plugin, item, "{message}"),
            Level::Debug => tracing::debug!(target: "techne::plugin", plugin, item, "{message}"),
            Level::Info => tracing::info!(target: "techne::plugin", plugin, item, "{message}"),
            Level::Warn => tracing::warn!(target: "techne::plugin", plugin, item, "{message}"),
            Level::Error => tracing::error!(target: "techne::plugin", plugin, item, "{message}"),
        }
    }
}
