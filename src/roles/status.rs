//! `mcpulse bus status`: end offset, committed offset and lag per partition of consumer
//! groups, read from the log itself.

use anyhow::Context;
use mcpulse_bus::{BusError, GroupStatus};
use serde::Serialize;

use super::{connect_bus, processor_groups};
use crate::Config;
use crate::config::BusConfig;

/// How `bus status` prints.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum StatusFormat {
    #[default]
    Table,
    Json,
}

/// The topics `group` is reported on: `topics` when given, the topic of an archiver
/// group, else every topic of the configuration.
fn topics_of(config: &Config, group: &str, topics: &[String]) -> Vec<String> {
    if !topics.is_empty() {
        return topics.to_vec();
    }
    processor_groups(config)
        .into_iter()
        .find(|(g, _)| g == group)
        .map(|(_, topics)| topics)
        .unwrap_or_else(|| config.topics.all())
}

/// Reads the status of `groups` (default: the archiver groups) on `topics` (default: see
/// [`topics_of`]).
pub async fn read(
    config: &Config,
    groups: &[String],
    topics: &[String],
) -> anyhow::Result<Vec<GroupStatus>> {
    let groups: Vec<String> = if groups.is_empty() {
        processor_groups(config)
            .into_iter()
            .map(|(g, _)| g)
            .collect()
    } else {
        groups.to_vec()
    };
    if let BusConfig::Embedded { .. } = config.bus {
        let dir = config.data_dir.join("log");
        anyhow::ensure!(
            dir.is_dir(),
            "no embedded log in {}: nothing has run with data_dir {} yet",
            dir.display(),
            config.data_dir.display()
        );
    }
    let bus = match connect_bus(config).await {
        Ok(bus) => bus,
        Err(e) if config.is_embedded() && is_locked(&e) => anyhow::bail!(
            "the embedded log in {} is in use by another process (is `mcpulse run` running?): \
             only one process can open it. Read the lag from the running process instead: \
             curl -s http://{}/metrics | grep mcpulse_bus_",
            config.data_dir.join("log").display(),
            running_api(config)
        ),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    let mut failure = None;
    for group in &groups {
        let topics = topics_of(config, group, topics);
        match bus
            .status(group, &topics)
            .await
            .with_context(|| format!("reading the offsets of group {group} on {topics:?}"))
        {
            Ok(status) => out.push(status),
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    let closed = bus.shutdown().await.context("closing the log");
    if let Some(e) = failure {
        return Err(e);
    }
    closed?;
    Ok(out)
}

/// The API address of the process running on this data_dir (from its ready file), else
/// the configured one.
fn running_api(config: &Config) -> String {
    std::fs::read(config.data_dir.join("ready.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| v["api"].as_str().map(str::to_owned))
        .unwrap_or_else(|| config.listen.api.to_string())
}

fn is_locked(e: &anyhow::Error) -> bool {
    // Opening the embedded log is `Unavailable` only when another process holds its lock.
    e.chain()
        .any(|c| matches!(c.downcast_ref::<BusError>(), Some(BusError::Unavailable(_))))
}

#[derive(Serialize)]
struct JsonGroup<'a> {
    group: &'a str,
    partitions: Vec<JsonPartition<'a>>,
    end_offset: u64,
    committed: u64,
    lag: u64,
}

#[derive(Serialize)]
struct JsonPartition<'a> {
    topic: &'a str,
    partition: u32,
    end_offset: u64,
    committed: Option<u64>,
    lag: u64,
}

/// Renders `statuses` for the terminal or as JSON (an array of groups, each with its
/// partitions and totals; `committed` is `null` for a partition never committed).
pub fn render(statuses: &[GroupStatus], format: StatusFormat) -> String {
    match format {
        StatusFormat::Json => {
            let groups: Vec<JsonGroup> = statuses
                .iter()
                .map(|g| JsonGroup {
                    group: &g.group,
                    partitions: g
                        .partitions
                        .iter()
                        .map(|p| JsonPartition {
                            topic: &p.topic,
                            partition: p.partition,
                            end_offset: p.end_offset,
                            committed: p.committed,
                            lag: p.lag(),
                        })
                        .collect(),
                    end_offset: g.partitions.iter().map(|p| p.end_offset).sum(),
                    committed: g.partitions.iter().filter_map(|p| p.committed).sum(),
                    lag: g.total_lag(),
                })
                .collect();
            let mut text = serde_json::to_string_pretty(&groups).expect("serializable");
            text.push('\n');
            text
        }
        StatusFormat::Table => {
            let mut rows = vec![[
                "GROUP".to_string(),
                "TOPIC".into(),
                "PARTITION".into(),
                "END".into(),
                "COMMITTED".into(),
                "LAG".into(),
            ]];
            for g in statuses {
                for p in &g.partitions {
                    rows.push([
                        g.group.clone(),
                        p.topic.clone(),
                        p.partition.to_string(),
                        p.end_offset.to_string(),
                        p.committed.map_or("-".into(), |c| c.to_string()),
                        p.lag().to_string(),
                    ]);
                }
                rows.push([
                    g.group.clone(),
                    "(total)".into(),
                    String::new(),
                    g.partitions
                        .iter()
                        .map(|p| p.end_offset)
                        .sum::<u64>()
                        .to_string(),
                    g.partitions
                        .iter()
                        .filter_map(|p| p.committed)
                        .sum::<u64>()
                        .to_string(),
                    g.total_lag().to_string(),
                ]);
            }
            let mut widths = [0usize; 6];
            for row in &rows {
                for (w, cell) in widths.iter_mut().zip(row) {
                    *w = (*w).max(cell.chars().count());
                }
            }
            let mut text = String::new();
            for row in &rows {
                let mut line = String::new();
                for (i, (cell, w)) in row.iter().zip(widths).enumerate() {
                    if i > 0 {
                        line.push_str("  ");
                    }
                    // Text left-aligned, numbers right-aligned.
                    if i < 2 {
                        line.push_str(&format!("{cell:<w$}"));
                    } else {
                        line.push_str(&format!("{cell:>w$}"));
                    }
                }
                text.push_str(line.trim_end());
                text.push('\n');
            }
            text
        }
    }
}

#[cfg(test)]
mod tests {
    use mcpulse_bus::PartitionStatus;

    use super::*;

    fn statuses() -> Vec<GroupStatus> {
        let p = |partition, end_offset, committed| PartitionStatus {
            topic: "mcpulse.spans.v1".into(),
            partition,
            end_offset,
            committed,
        };
        vec![GroupStatus {
            group: "mcpulse-archive-spans".into(),
            partitions: vec![p(0, 120, Some(100)), p(1, 7, None)],
        }]
    }

    #[test]
    fn table_has_a_row_per_partition_and_a_total() {
        let text = render(&statuses(), StatusFormat::Table);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert!(lines[0].starts_with("GROUP"), "{text}");
        let cells = |l: &str| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>();
        assert_eq!(
            cells(lines[1]),
            [
                "mcpulse-archive-spans",
                "mcpulse.spans.v1",
                "0",
                "120",
                "100",
                "20"
            ]
        );
        assert_eq!(
            cells(lines[2]),
            [
                "mcpulse-archive-spans",
                "mcpulse.spans.v1",
                "1",
                "7",
                "-",
                "7"
            ]
        );
        assert_eq!(
            cells(lines[3]),
            ["mcpulse-archive-spans", "(total)", "127", "100", "27"]
        );
    }

    #[test]
    fn json_has_partitions_and_totals() {
        let v: serde_json::Value =
            serde_json::from_str(&render(&statuses(), StatusFormat::Json)).unwrap();
        assert_eq!(v[0]["group"], "mcpulse-archive-spans");
        assert_eq!(v[0]["lag"], 27);
        assert_eq!(v[0]["end_offset"], 127);
        assert_eq!(v[0]["partitions"][1]["committed"], serde_json::Value::Null);
        assert_eq!(v[0]["partitions"][0]["lag"], 20);
    }

    #[test]
    fn topics_default_to_the_group_s_topic() {
        use crate::roles::analytics::GROUP_SIGNALS;
        use crate::roles::{GROUP_ARCHIVE_PROBES, GROUP_ARCHIVE_SPANS};
        let config = Config::embedded_default();
        assert_eq!(
            topics_of(&config, GROUP_SIGNALS, &[]),
            vec![
                "mcpulse.spans.v1".to_string(),
                "mcpulse.probes.v1".to_string()
            ]
        );
        assert_eq!(
            topics_of(&config, GROUP_ARCHIVE_PROBES, &[]),
            vec!["mcpulse.probes.v1".to_string()]
        );
        assert_eq!(topics_of(&config, "other", &[]).len(), 5);
        assert_eq!(
            topics_of(&config, GROUP_ARCHIVE_SPANS, &["t".to_string()]),
            vec!["t".to_string()]
        );
    }
}
