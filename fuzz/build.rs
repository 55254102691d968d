//! Extracts the functions' event decoders from the source of `relance-aws` (which pulls the
//! whole AWS SDK, too heavy to build for fuzzing) into `$OUT_DIR/decoders.rs`, so the
//! `functions` target fuzzes the very code the Lambda functions run, never a copy that could
//! drift. A decoder renamed or moved fails this build with its name.

use std::path::Path;

/// (file under shared/relance-aws/src, how the function starts).
const DECODERS: [(&str, &str); 4] = [
    (
        "handlers.rs",
        "fn decode<T: serde::de::DeserializeOwned>(v: &Value)",
    ),
    ("handlers.rs", "pub fn ses_engagement(body: &str)"),
    ("handlers.rs", "pub fn sms_delivery_status("),
    ("channels.rs", "pub fn decode_send(body: &str)"),
];

fn main() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/relance-aws/src");
    let mut out =
        String::from("// Extracted by fuzz/build.rs from shared/relance-aws/src: do not edit.\n");
    for (file, start) in DECODERS {
        let path = src.join(file);
        println!("cargo:rerun-if-changed={}", path.display());
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let at = text.find(start).unwrap_or_else(|| {
            panic!("{file}: no `{start}`: the decoder moved; update fuzz/build.rs and the functions target")
        });
        // The function ends at the first closing brace in the first column.
        let len = text[at..]
            .find("\n}\n")
            .unwrap_or_else(|| panic!("{file}: `{start}` has no end"))
            + 3;
        out.push_str(&format!("\n// {file}\n"));
        if !start.starts_with("pub ") {
            out.push_str("pub(crate) ");
        }
        out.push_str(&text[at..at + len]);
    }
    let dest = Path::new(&std::env::var("OUT_DIR").expect("OUT_DIR")).join("decoders.rs");
    std::fs::write(&dest, out).unwrap_or_else(|e| panic!("{}: {e}", dest.display()));
}
