//! Alert routing (`routes.yaml`) and delivery to PagerDuty, OpsGenie, Discord, email and
//! webhooks, with the notification log: [`routes`] decides who gets an incident
//! transition, [`receivers`] speak each provider's API, [`delivery`] retries, breaks
//! circuits and rate-limits, and [`notify`] is the stream stage that delivers `alerts.v1`
//! once.

pub mod delivery;
pub mod notify;
pub mod receivers;
pub mod routes;
