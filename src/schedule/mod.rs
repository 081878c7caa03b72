//! Commands for later: the dispatcher that publishes scheduled commands when their time comes.

pub mod dispatch;
