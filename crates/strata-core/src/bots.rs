//! Known bots, recognised by their user agent.
//!
//! Bots have no stable ids, may hit one variant unevenly and inflate
//! denominators, so a live experiment does not assign a context whose
//! `user_agent` attribute is a known bot's (unless the experiment sets
//! `include_bots`): the bot gets the caller's default and no exposure is
//! logged (`docs/assignment-spec.md`, section 10). The list is the `isbot`
//! crate's maintained pattern list, matched case-insensitively; it is
//! compiled once per process, on first use.
//!
//! Bots that do not say so are the analysis' business: it drops units with
//! impossible activity before computing metrics.

use std::sync::OnceLock;

use serde_json::Value;

use crate::Context;

/// The context attribute holding the client's user agent.
pub const USER_AGENT_ATTR: &str = "user_agent";

fn list() -> &'static isbot::Bots {
    static BOTS: OnceLock<isbot::Bots> = OnceLock::new();
    BOTS.get_or_init(isbot::Bots::default)
}

/// Whether `user_agent` is a known bot's.
pub fn is_bot_user_agent(user_agent: &str) -> bool {
    !user_agent.is_empty() && list().is_bot(user_agent)
}

/// Whether the context's `user_agent` attribute (a string) is a known
/// bot's. A missing or non-string attribute is not a bot. The answer is
/// kept in the context, so evaluating several flags checks once.
pub fn is_bot(ctx: &Context) -> bool {
    match ctx.get(USER_AGENT_ATTR) {
        Some(Value::String(ua)) => ctx.bot_flag(|| is_bot_user_agent(ua)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crawlers_and_scripts_are_bots_and_browsers_are_not() {
        for ua in [
            "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
            "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
            "curl/8.5.0",
            "python-requests/2.31.0",
            "Wget/1.21.4",
            "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
        ] {
            assert!(is_bot_user_agent(ua), "{ua}");
        }
        for ua in [
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) \
             Chrome/126.0.0.0 Safari/537.36",
            "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 \
             (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1",
            "Mozilla/5.0 (X11; Linux x86_64; rv:127.0) Gecko/20100101 Firefox/127.0",
            "",
        ] {
            assert!(!is_bot_user_agent(ua), "{ua}");
        }
    }
}
