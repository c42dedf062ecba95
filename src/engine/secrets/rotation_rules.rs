//! TEMPORARY local stand-in; replaced by the real module.
use serde::{Deserialize, Serialize};
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RotationRules {
    pub automatically_after_days: Option<i64>,
    pub schedule_expression: Option<String>,
    pub duration: Option<String>,
}
#[derive(Debug, thiserror::Error)]
pub enum RulesError { #[error("bad rules")] Bad }
pub struct Schedule(i64);
impl Schedule {
    pub fn parse(rules: &RotationRules) -> Result<Schedule, RulesError> { rules.automatically_after_days.map(Schedule).ok_or(RulesError::Bad) }
    pub fn next_window(&self, after: i64, last_rotated: Option<i64>) -> Option<Window> { let s = last_rotated.unwrap_or(after) + self.0*86400; let s = s - s.rem_euclid(86400); Some(Window{start:s,end:s+86400}) }
}
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window { pub start: i64, pub end: i64 }
impl Window { pub fn pick(&self, rng: &mut impl rand::Rng) -> i64 { self.start + (rng.next_u64() % ((self.end-self.start) as u64)) as i64 } }
