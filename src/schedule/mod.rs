//! Commands for later: the dispatcher that publishes scheduled commands when their time comes,
//! and the recurring schedules (cron) that submit one command per tick.

pub mod cron;
pub mod dispatch;
pub mod recurring;
