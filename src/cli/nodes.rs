//! How `info`, `du` and `prune` ask every daemon given: one, or each node
//! of a pool at once ([`strata::pool::Pool::each`]), and how they report a
//! node that did not answer.

use anyhow::Result;

use strata::client::{Client, ClientError};
use strata::pool::Node;

use super::Cli;

/// One daemon's answer to a command that asks every node (`info`, `du`,
/// `prune`).
pub struct Answer<T> {
    pub node: Node,
    pub answer: Result<T, ClientError>,
}

/// `ask` put to every daemon given, at once. With one daemon its failure is
/// the command's error, as it always was; in a pool a node that failed is
/// the caller's to print beside the others (then [`fail_if_any_down`]).
pub async fn ask_each<T, F, Fut>(cli: &Cli, ask: F) -> Result<Vec<Answer<T>>>
where
    F: for<'n> Fn(&'n Node, Client) -> Fut,
    Fut: std::future::Future<Output = Result<T, ClientError>>,
{
    let pool = cli.daemon.pool()?;
    let mut answers: Vec<Answer<T>> = pool
        .each(ask)
        .await
        .into_iter()
        .map(|(node, answer)| Answer {
            node: node.clone(),
            answer,
        })
        .collect();
    if !cli.daemon.is_pool() {
        if let Some(failed) = answers.iter().position(|a| a.answer.is_err()) {
            if let Err(e) = answers.swap_remove(failed).answer {
                return Err(e.into());
            }
        }
    }
    Ok(answers)
}

/// An error naming how many nodes did not answer, once the rest was shown.
pub fn fail_if_any_down<T>(answers: &[Answer<T>]) -> Result<()> {
    let down = answers.iter().filter(|a| a.answer.is_err()).count();
    match down {
        0 => Ok(()),
        _ => anyhow::bail!("{down} of {} nodes did not answer", answers.len()),
    }
}

/// Every node's answer as JSON: `{"node", "address", KEY: answer}` or
/// `{"node", "address", "error"}`.
pub fn answers_json<T: serde::Serialize>(
    answers: &[Answer<T>],
    key: &str,
) -> Result<serde_json::Value> {
    let each = answers.iter().map(|a| {
        let mut entry = serde_json::Map::new();
        entry.insert("node".into(), a.node.name.clone().into());
        entry.insert("address".into(), a.node.addr.to_string().into());
        match &a.answer {
            Ok(value) => entry.insert(key.into(), serde_json::to_value(value)?),
            Err(e) => entry.insert("error".into(), e.to_string().into()),
        };
        Ok(serde_json::Value::Object(entry))
    });
    Ok(serde_json::Value::Array(each.collect::<Result<_>>()?))
}
