//! Enqueues one `Order` job on the worker's queue with a correlation id, as
//! a web service would for the request it is serving: the id travels in the
//! `CORRELATION_ID` and `traceparent` headers and the `correlation_id`
//! property (`logcollect::correlation::inject_properties`), so the
//! worker's records, and this program's own, carry it.
//!
//! ```text
//! cargo run -p worker --bin send_task -- order-42     # that correlation id
//! cargo run -p worker --bin send_task                 # a new one (UUIDv7)
//! cargo run -p worker --bin send_task -- order-42 7   # order number 7 (default: random)
//! ```
//!
//! Prints the correlation id on stdout.

use std::process::ExitCode;

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Confirmation, Connection, ConnectionProperties};
use worker::Order;

async fn send(queue: &str, order: &Order, correlation_id: &str) -> Result<(), String> {
    let url = worker::amqp_url();
    let conn = Connection::connect(&url, ConnectionProperties::default())
        .await
        .map_err(|e| format!("cannot connect to the job broker: {e}"))?;
    let ch = conn.create_channel().await.map_err(|e| e.to_string())?;
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(|e| e.to_string())?;
    // The same declaration as the worker's (apalis-amqp: durable, no arguments).
    ch.queue_declare(
        queue.into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .map_err(|e| format!("cannot declare the queue {queue}: {e}"))?;
    let body = serde_json::to_vec(order).map_err(|e| e.to_string())?;
    let props = logcollect::correlation::inject_properties(
        BasicProperties::default()
            .with_content_type("application/json".into())
            .with_delivery_mode(2)
            .with_message_id(logcollect::correlation::generate().into()),
        correlation_id,
    );
    let confirm = ch
        .basic_publish(
            "".into(),
            queue.into(),
            BasicPublishOptions::default(),
            &body,
            props,
        )
        .await
        .map_err(|e| e.to_string())?
        .await
        .map_err(|e| e.to_string())?;
    let _ = conn.close(200, "bye".into()).await;
    match confirm {
        Confirmation::Nack(_) => Err("the broker refused the job".to_owned()),
        _ => Ok(()),
    }
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let correlation_id = args
        .next()
        .unwrap_or_else(logcollect::correlation::generate);
    if !logcollect::correlation::is_valid(&correlation_id) {
        eprintln!("send_task: a correlation id is 1 to 128 characters of A-Z a-z 0-9 . _ : -");
        return ExitCode::from(2);
    }
    let order = match args.next().map(|n| n.parse::<u64>()) {
        None => Order {
            order: rand::random_range(1..1_000_000),
        },
        Some(Ok(order)) => Order { order },
        Some(Err(_)) => {
            eprintln!("send_task: the order number must be a number");
            return ExitCode::from(2);
        }
    };
    let guard = match worker::config("send_task").and_then(logcollect::boot::default_config) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("send_task: {e}");
            return ExitCode::from(2);
        }
    };
    let queue = worker::queue();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("send_task: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let span = logcollect::correlation::scope(&correlation_id);
    let sent = span.in_scope(|| rt.block_on(send(&queue, &order, &correlation_id)));
    let code = match sent {
        Ok(()) => {
            span.in_scope(|| {
                tracing::info!(
                    order = order.order,
                    queue = queue.as_str(),
                    "enqueued order {}",
                    order.order
                )
            });
            println!("{correlation_id}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            span.in_scope(|| {
                tracing::error!(
                    order = order.order,
                    error = e.as_str(),
                    "could not enqueue order"
                )
            });
            eprintln!("send_task: {e}");
            ExitCode::FAILURE
        }
    };
    drop(guard); // flushes within LOGCOLLECT_SHUTDOWN_TIMEOUT (default 5 s)
    code
}
