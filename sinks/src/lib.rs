//! Alert routing (`routes.yaml`) and delivery to PagerDuty, OpsGenie, Discord, email and
//! webhooks, with the notification log. Empty until the routing issue lands: the spine
//! produces no alerts yet.

pub mod delivery;
pub mod receivers;
pub mod routes;
