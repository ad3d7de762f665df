//! hubble-tui: Hubble flows in the terminal. `model` (what is known) and `app` (state and key
//! transitions) hold no I/O; `ui` draws them; `source` reads files or follows a server on
//! other threads/tasks; `run` ties them together in one loop.

pub mod app;
pub mod layout;
pub mod model;
pub mod run;
pub mod source;
pub mod ui;
