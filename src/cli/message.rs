//! `dingsync message send|recall|status`: JeecgBoot's "第三方APP消息测试" for operators —
//! a work notification sent, recalled and inspected by hand. Every limit is checked before
//! any call, and an error names the limit.

use std::collections::HashMap;

use crate::config::{Loaded, TenantConfig, TenantId};
use crate::dingtalk::api::MAX_MESSAGE_BYTES;
use crate::dingtalk::types::Message;
use crate::dingtalk::DingTalkClient;
use crate::messages::chunks;
use crate::store::Store;

use super::{connect, CliError, Refusal, UsageError};

/// `dingsync message ...`.
#[derive(Debug, clap::Subcommand)]
pub enum MessageCommand {
    /// Send a work notification; prints the task id of each chunk (≤ 100 recipients each).
    Send {
        /// The tenant whose DingTalk app sends (needed when several are configured).
        #[arg(long)]
        tenant: Option<TenantId>,
        /// Recipients.
        #[command(flatten)]
        to: To,
        /// The message.
        #[command(flatten)]
        body: Body,
    },
    /// Recall a sent notification (DingTalk allows it within 24 hours).
    Recall {
        /// The tenant whose app sent it.
        #[arg(long)]
        tenant: Option<TenantId>,
        /// The task id `send` printed.
        task_id: i64,
    },
    /// Show a notification's progress and, for ≤ 100 recipients, who read it.
    Status {
        /// The tenant whose app sent it.
        #[arg(long)]
        tenant: Option<TenantId>,
        /// The task id.
        task_id: i64,
    },
}

/// Who receives the message: exactly one of these.
#[derive(Debug, clap::Args)]
#[group(required = true, multiple = false)]
pub struct To {
    /// JeecgBoot usernames, comma-separated (mapped through their DingTalk links).
    #[arg(long, value_delimiter = ',', value_name = "USERNAME,...")]
    to: Vec<String>,
    /// DingTalk userids, comma-separated.
    #[arg(long, value_delimiter = ',', value_name = "USERID,...")]
    userid: Vec<String>,
    /// Everyone in the organisation.
    #[arg(long)]
    all: bool,
}

/// The message: exactly one of these.
#[derive(Debug, clap::Args)]
#[group(required = true, multiple = false)]
pub struct Body {
    /// A text message.
    #[arg(long, value_name = "TEXT")]
    text: Option<String>,
    /// A markdown message.
    #[arg(long, num_args = 2, value_names = ["TITLE", "BODY"])]
    markdown: Option<Vec<String>>,
    /// An action card with one button.
    #[arg(long, num_args = 4, value_names = ["TITLE", "MARKDOWN", "BUTTON", "URL"])]
    action_card: Option<Vec<String>>,
}

/// Whether `value` of `field` is within DingTalk's `max` characters.
fn limit(field: &'static str, value: &str, max: usize) -> Result<(), UsageError> {
    let length = value.chars().count();
    if length > max {
        return Err(UsageError::TooLong { field, length, max });
    }
    Ok(())
}

/// The message, checked against DingTalk's field limits and its 2048-byte size.
fn message(body: &Body) -> Result<Message, UsageError> {
    let message = match (&body.text, &body.markdown, &body.action_card) {
        (Some(text), _, _) => {
            limit("text", text, 5000)?;
            Message::text(text)
        }
        (_, Some(parts), _) => {
            limit("markdown title", &parts[0], 64)?;
            limit("markdown body", &parts[1], 5000)?;
            Message::markdown(&parts[0], &parts[1])
        }
        (_, _, Some(parts)) => {
            limit("action card title", &parts[0], 64)?;
            limit("action card markdown", &parts[1], 5000)?;
            limit("button title", &parts[2], 20)?;
            limit("button URL", &parts[3], 500)?;
            Message::action_card(&parts[0], &parts[1], &parts[2], &parts[3])
        }
        _ => return Err(UsageError::NoMessage),
    };
    if message.encoded_len() > MAX_MESSAGE_BYTES {
        return Err(UsageError::TooLarge {
            bytes: message.encoded_len(),
            max: MAX_MESSAGE_BYTES,
        });
    }
    Ok(message)
}

/// The tenant `message` works for (`wanted`, or the only one) and its DingTalk client.
fn pick(
    loaded: &Loaded,
    tenants: &[TenantConfig],
    wanted: Option<TenantId>,
) -> Result<(TenantConfig, DingTalkClient), CliError> {
    let tenant = match wanted {
        Some(id) => tenants
            .iter()
            .find(|t| t.id == id)
            .ok_or(UsageError::TenantNotConfigured(id))?,
        None if tenants.len() == 1 => &tenants[0],
        None => return Err(UsageError::TenantNotNamed.into()),
    };
    let client = DingTalkClient::for_tenant(&loaded.config, tenant)?;
    Ok((tenant.clone(), client))
}

/// Runs a `message` subcommand.
pub(super) async fn run(loaded: &Loaded, command: &MessageCommand) -> Result<(), CliError> {
    let prepared = match command {
        MessageCommand::Send { body, .. } => Some(message(body)?),
        _ => None,
    };
    let store = connect(loaded).await?;
    let result = execute(loaded, &store, command, prepared).await;
    store.close().await;
    result
}

async fn execute(
    loaded: &Loaded,
    store: &Store,
    command: &MessageCommand,
    prepared: Option<Message>,
) -> Result<(), CliError> {
    let tenants = crate::sync::run::tenants(&loaded.config, store).await?;
    let wanted = match command {
        MessageCommand::Send { tenant, .. }
        | MessageCommand::Recall { tenant, .. }
        | MessageCommand::Status { tenant, .. } => *tenant,
    };
    let (tenant, client) = pick(loaded, &tenants, wanted)?;
    match (command, prepared) {
        (MessageCommand::Send { to, .. }, Some(message)) => {
            send(store, &client, tenant.id, to, &message).await
        }
        (MessageCommand::Recall { task_id, .. }, _) => {
            client.recall(*task_id).await.map_err(Refusal::DingTalk)?;
            println!("task {task_id} recalled");
            Ok(())
        }
        (MessageCommand::Status { task_id, .. }, _) => status(&client, *task_id).await,
        _ => Ok(()),
    }
}

async fn send(
    store: &Store,
    client: &DingTalkClient,
    tenant: TenantId,
    to: &To,
    message: &Message,
) -> Result<(), CliError> {
    let mut userids = to.userid.clone();
    if !to.to.is_empty() {
        let users = store.load_users(0).await?;
        let links: HashMap<String, String> = store
            .links(tenant)
            .await?
            .into_iter()
            .map(|l| (l.user_id, l.userid))
            .collect();
        let mut missing = Vec::new();
        for name in &to.to {
            match users
                .iter()
                .find(|u| &u.username == name)
                .and_then(|u| links.get(&u.id))
            {
                Some(userid) => userids.push(userid.clone()),
                None => missing.push(name.clone()),
            }
        }
        if !missing.is_empty() {
            return Err(Refusal::NotLinked(missing).into());
        }
    }
    for chunk in chunks(to.all, &userids, &[]) {
        let task = client
            .send(&chunk, message)
            .await
            .map_err(Refusal::DingTalk)?;
        println!("{task}");
    }
    Ok(())
}

async fn status(client: &DingTalkClient, task_id: i64) -> Result<(), CliError> {
    let progress = client
        .send_progress(task_id)
        .await
        .map_err(Refusal::DingTalk)?;
    let state = match progress.status {
        2 => "done",
        1 => "processing",
        _ => "not started",
    };
    println!(
        "task {task_id}: {state} ({}%)",
        progress.progress_in_percent
    );
    match client.send_result(task_id).await {
        Ok(result) => {
            println!("  read {}: {}", result.read_user_id_list.len(), result.read_user_id_list.join(","));
            println!("  unread {}: {}", result.unread_user_id_list.len(), result.unread_user_id_list.join(","));
            println!("  invalid {}: {}", result.invalid_user_id_list.len(), result.invalid_user_id_list.join(","));
            println!("  forbidden {} (daily cap or same content today): {}", result.forbidden_user_id_list.len(), result.forbidden_user_id_list.join(","));
            println!("  failed {}: {}", result.failed_user_id_list.len(), result.failed_user_id_list.join(","));
        }
        Err(error) => println!("  no per-user result ({error}); DingTalk gives none for more than 100 recipients or after 24 h"),
    }
    Ok(())
}
