//! `relance new`: a scenario file from a built-in template.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};

use crate::templates;

pub fn new_cmd(
    template: Option<&str>,
    id: Option<&str>,
    name: Option<&str>,
    out: Option<&Path>,
) -> Result<ExitCode> {
    let Some(template) = template else {
        outln!("templates (relance new --template NAME --id ID):");
        for (name, what, _) in templates::TEMPLATES {
            outln!("  {name:<24} {what}");
        }
        return Ok(ExitCode::SUCCESS);
    };
    let Some((_, _, text)) = templates::TEMPLATES.iter().find(|(n, _, _)| *n == template) else {
        let names: Vec<&str> = templates::TEMPLATES.iter().map(|(n, _, _)| *n).collect();
        bail!("no template \"{template}\"; there are {}", names.join(", "));
    };
    let id = id.unwrap_or(template);
    if id.is_empty()
        || !id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        bail!("--id: \"{id}\" is not a valid id: use lowercase letters, digits and dashes");
    }
    let text = templates::instantiate(text, id, name);
    let default_out = PathBuf::from(format!("{id}.yaml"));
    let out = out.unwrap_or(&default_out);
    if out == Path::new("-") {
        out!("{text}");
    } else {
        if out.exists() {
            bail!("{} exists: choose another --out or --id", out.display());
        }
        fs::write(out, text).with_context(|| format!("cannot write {}", out.display()))?;
        outln!("wrote {} from template {template}", out.display());
    }
    Ok(ExitCode::SUCCESS)
}
