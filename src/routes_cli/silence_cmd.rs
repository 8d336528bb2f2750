//! `mcpulse silence add|list|expire`: silences in `{data_dir}/silences.json`, as an
//! operator (the CLI works on the data folder directly).

use chrono::{DateTime, Utc};
use mcpulse_sinks::routes::{Matchers, SilenceState};

use super::silences::{NewSilence, SilenceStore, SilenceView, new_id, state_name};
use super::{CliError, OutputFormat, table};

/// `silence add`'s flags.
pub struct AddArgs {
    pub matchers: Vec<String>,
    pub duration: Option<std::time::Duration>,
    pub starts_at: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub comment: String,
    pub tenant: Option<String>,
    pub created_by: String,
}

/// Adds a silence and prints its id.
pub fn add(store: &SilenceStore, args: AddArgs) -> Result<(), CliError> {
    let matchers = parse_matchers(&args.matchers)?;
    let now = Utc::now();
    let new = NewSilence {
        matchers,
        tenant: args.tenant,
        starts_at: args.starts_at,
        ends_at: args.until,
        duration: args.duration,
        created_by: args.created_by,
        comment: args.comment,
    };
    let silence = new.into_silence(new_id(), now).map_err(|e| {
        let flag = match e.field {
            "matchers" => "--matcher",
            "ends_at" => "--until",
            "duration" => "--duration",
            "starts_at" => "--starts-at",
            "created_by" => "--created-by",
            "comment" => "--comment",
            "tenant" => "--tenant",
            other => other,
        };
        CliError::Usage(format!("{flag}: {}", e.message))
    })?;
    let id = silence.id.clone();
    store.update(now, |set| Ok(set.add(silence)?))?;
    println!("{id}");
    Ok(())
}

/// Each `--matcher` as one matcher (the same forms as in routes.yaml).
fn parse_matchers(texts: &[String]) -> Result<Matchers, CliError> {
    let json = serde_json::Value::from(texts.to_vec());
    serde_path_to_error::deserialize(json).map_err(|e| {
        let which = e
            .path()
            .to_string()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<usize>()
            .ok()
            .and_then(|i| texts.get(i));
        let message = e.into_inner().to_string();
        CliError::Usage(match which {
            Some(text) => format!("--matcher {text:?}: {message}"),
            None => format!("--matcher: {message}"),
        })
    })
}

/// Prints the silences (pending and active; expired too with `all`), optionally of one
/// tenant only.
pub fn list(
    store: &SilenceStore,
    all: bool,
    tenant: Option<&str>,
    format: OutputFormat,
) -> Result<(), CliError> {
    let set = store.load()?;
    let now = Utc::now();
    let shown: Vec<SilenceView> = set
        .list()
        .iter()
        .filter(|s| all || s.state_at(now) != SilenceState::Expired)
        .filter(|s| tenant.is_none_or(|t| s.tenant.as_deref() == Some(t)))
        .map(|s| SilenceView::new(s, now))
        .collect();
    match format {
        OutputFormat::Json => {
            println!(
                "{}",
                serde_json::to_string_pretty(&shown).expect("silences serialize")
            );
        }
        OutputFormat::Table => {
            let time = |t: DateTime<Utc>| t.format("%Y-%m-%dT%H:%M:%SZ").to_string();
            let rows: Vec<Vec<String>> = shown
                .iter()
                .map(|v| {
                    let s = v.silence;
                    vec![
                        s.id.clone(),
                        state_name(s.state_at(now)).to_string(),
                        s.tenant.clone().unwrap_or_else(|| "(all)".into()),
                        s.matchers.to_string(),
                        time(s.starts_at),
                        time(s.ends_at),
                        s.created_by.clone(),
                        s.comment.clone(),
                    ]
                })
                .collect();
            print!(
                "{}",
                table::render(
                    &[
                        "ID",
                        "STATE",
                        "TENANT",
                        "MATCHERS",
                        "STARTS",
                        "ENDS",
                        "CREATED BY",
                        "COMMENT"
                    ],
                    &rows
                )
            );
        }
    }
    Ok(())
}

/// Ends a silence now.
pub fn expire(store: &SilenceStore, id: &str) -> Result<(), CliError> {
    let now = Utc::now();
    store.update(now, |set| Ok(set.expire(id, now)?))?;
    println!("silence {id} expired");
    Ok(())
}
