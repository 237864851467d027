//! `sealkit reload`: asks the authority running on this host to re-read its configuration.

use crate::control::ControlRequest;
use std::process::ExitCode;

pub fn run(target: super::drill::Target) -> anyhow::Result<ExitCode> {
    let response = super::drill::send(&target, ControlRequest::Reload)?;
    outln!("{}", response.message);
    Ok(ExitCode::SUCCESS)
}
