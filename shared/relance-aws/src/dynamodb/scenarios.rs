//! The scenario port on DynamoDB: versions, status, the registry and settings.

use chrono::{DateTime, Utc};
use relance_core::ports::{ScenarioEntry, ScenarioSource, ScenarioStore, SourceFormat, Status};

use super::DynamoStore;
use super::item::{Item, dynamo, get_n, get_s, n, s};
use crate::error::StoreError;
use crate::keys;

impl ScenarioStore for DynamoStore {
    type Error = StoreError;

    fn scenarios(&mut self, status: Option<Status>) -> Result<Vec<ScenarioEntry>, StoreError> {
        let mut out = Vec::new();
        for item in self.query(
            &self.config.state_table,
            keys::REGISTRY,
            keys::REGISTRY_PREFIX,
        )? {
            let Some(id) = get_s(&item, keys::SK).and_then(keys::registry_scenario) else {
                continue;
            };
            if let Some(entry) = self.scenario(id)?
                && status.is_none_or(|st| st == entry.status)
            {
                out.push(entry);
            }
        }
        Ok(out)
    }

    fn scenario(&mut self, id: &str) -> Result<Option<ScenarioEntry>, StoreError> {
        let Some(item) = self.get(&keys::scenario(id), keys::SCENARIO_META)? else {
            return Ok(None);
        };
        let status = get_s(&item, "status")
            .and_then(Status::parse)
            .ok_or(StoreError::Corrupt {
                what: "scenario status",
                why: id.to_string(),
            })?;
        Ok(Some(ScenarioEntry {
            id: id.to_string(),
            status,
            latest_version: get_n(&item, "latest_version").unwrap_or(0) as u32,
            active_version: get_n(&item, "active_version").map(|v| v as u32),
        }))
    }

    fn scenario_source(
        &mut self,
        id: &str,
        version: u32,
    ) -> Result<Option<ScenarioSource>, StoreError> {
        let Some(item) = self.get(&keys::scenario(id), &keys::scenario_version(version))? else {
            return Ok(None);
        };
        Ok(Some(ScenarioSource {
            id: id.to_string(),
            version,
            format: if get_s(&item, "format") == Some("json") {
                SourceFormat::Json
            } else {
                SourceFormat::Yaml
            },
            text: get_s(&item, "text").unwrap_or("").to_string(),
        }))
    }

    fn put_version(
        &mut self,
        id: &str,
        format: SourceFormat,
        text: &str,
        now: DateTime<Utc>,
    ) -> Result<u32, StoreError> {
        let existing = self.scenario(id)?;
        let version = existing.as_ref().map_or(0, |e| e.latest_version) + 1;
        let mut item = Item::new();
        item.insert(keys::PK.into(), s(keys::scenario(id)));
        item.insert(keys::SK.into(), s(keys::scenario_version(version)));
        item.insert(
            "format".into(),
            s(if format == SourceFormat::Json {
                "json"
            } else {
                "yaml"
            }),
        );
        item.insert("text".into(), s(text));
        item.insert("created_at".into(), s(keys::text(now)));
        if !self.put_new(item)? {
            return Err(StoreError::Conflict(format!(
                "scenario {id} version {version}"
            )));
        }
        // Only the latest version moves (never back, if a later put came first): a status or
        // an active version set meanwhile (a pause, an archive) stays as it is.
        let moved = self.bridge.block(
            self.client
                .update_item()
                .table_name(&self.config.state_table)
                .key(keys::PK, s(keys::scenario(id)))
                .key(keys::SK, s(keys::SCENARIO_META))
                .update_expression(
                    "SET latest_version = :v, updated_at = :u, #st = if_not_exists(#st, :draft)",
                )
                .condition_expression("attribute_not_exists(latest_version) OR latest_version < :v")
                .expression_attribute_names("#st", "status")
                .expression_attribute_values(":v", n(version))
                .expression_attribute_values(":u", s(keys::text(now)))
                .expression_attribute_values(":draft", s(Status::Draft.as_str()))
                .send(),
        );
        self.unit_reads
            .forget(&keys::scenario(id), keys::SCENARIO_META);
        match moved {
            Ok(_) => {}
            Err(e) if super::item::is_conditional(&e) => {}
            Err(e) => return Err(dynamo("UpdateItem")(e)),
        }
        let mut reg = Item::new();
        reg.insert(keys::PK.into(), s(keys::REGISTRY));
        reg.insert(keys::SK.into(), s(keys::scenario(id)));
        self.put(reg)?;
        Ok(version)
    }

    fn set_status(
        &mut self,
        id: &str,
        status: Status,
        active_version: Option<u32>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let mut update = self
            .client
            .update_item()
            .table_name(&self.config.state_table)
            .key(keys::PK, s(keys::scenario(id)))
            .key(keys::SK, s(keys::SCENARIO_META))
            .expression_attribute_values(":s", s(status.as_str()))
            .expression_attribute_values(":u", s(keys::text(now)));
        update = match active_version {
            Some(v) => update
                .update_expression("SET #st = :s, updated_at = :u, active_version = :v")
                .expression_attribute_values(":v", n(v)),
            None => update.update_expression("SET #st = :s, updated_at = :u"),
        };
        let updated = self
            .bridge
            .block(update.expression_attribute_names("#st", "status").send());
        self.unit_reads
            .forget(&keys::scenario(id), keys::SCENARIO_META);
        updated.map_err(dynamo("UpdateItem"))?;
        Ok(())
    }

    fn setting(&mut self, name: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .get("settings", name)?
            .and_then(|item| get_s(&item, "text").map(str::to_string)))
    }

    fn put_setting(
        &mut self,
        name: &str,
        text: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let mut item = Item::new();
        item.insert(keys::PK.into(), s(keys::SETTINGS));
        item.insert(keys::SK.into(), s(name));
        item.insert("text".into(), s(text));
        item.insert("updated_at".into(), s(keys::text(now)));
        self.put(item)
    }
}
