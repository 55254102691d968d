//! Fuzz: the decoders of everything that arrives from outside — API / EventBridge details,
//! events-file lines, contacts (JSON and CSV imports).
#![no_main]

use libfuzzer_sys::fuzz_target;
use relance_core::Contact;
use relance_core::script::ScriptedEvent;
use relance_core::wire::{self, ActivityDetail, ContactDetail, EngagementDetail, LaunchDetail};
use relance_runtime::import::{ContactsFormat, parse_contacts};

fuzz_target!(|data: &[u8]| {
    let _ = wire::decode::<ContactDetail>(data);
    let _ = wire::decode::<ActivityDetail>(data);
    let _ = wire::decode::<EngagementDetail>(data);
    let _ = wire::decode::<LaunchDetail>(data);
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(text) {
        let _ = ScriptedEvent::from_json(v.clone());
        if let Ok(mut c) = Contact::from_json(v) {
            let _ = (c.email(), c.phone(), c.timezone(), c.push_endpoints(), c.web_push_subscriptions(), c.subscription("newsletter"));
            c.set_field("a.b.c", serde_json::json!(1));
        }
    }
    let _ = parse_contacts(text, ContactsFormat::Csv);
    let _ = parse_contacts(text, ContactsFormat::JsonLines);
});
