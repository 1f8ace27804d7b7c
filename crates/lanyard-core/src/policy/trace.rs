//! The steps of a decision, for `lanyard explain` and for denial audit events.

/// One step of a decision.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Step {
    /// Step name, e.g. `tenant`.
    pub step: &'static str,
    /// Whether it passed.
    pub ok: bool,
    /// What was found.
    pub detail: String,
}

/// Collects a decision's steps: every one, with every candidate entry, for
/// `explain` (which never issues); the same steps for the audit event of a
/// real request, so `lanyard audit show ID` explains a denial afterwards.
#[derive(Debug, Default, Clone)]
pub struct Trace {
    explain: bool,
    /// The steps so far.
    pub steps: Vec<Step>,
}

impl Trace {
    /// A dry run: record everything, issue nothing.
    pub fn recording() -> Self {
        Self {
            explain: true,
            steps: Vec::new(),
        }
    }

    /// The steps of a real request, for its audit event.
    pub fn for_audit() -> Self {
        Self::default()
    }

    /// Whether this is a dry run (`explain`).
    pub fn explaining(&self) -> bool {
        self.explain
    }

    /// Records a passed step.
    pub fn ok(&mut self, step: &'static str, detail: impl FnOnce() -> String) {
        self.steps.push(Step {
            step,
            ok: true,
            detail: detail(),
        });
    }

    /// Records a failed step.
    pub fn fail(&mut self, step: &'static str, denial: &crate::Denial) {
        self.steps.push(Step {
            step,
            ok: false,
            detail: denial.to_string(),
        });
    }

    /// Records `result` under `step` and passes it on.
    ///
    /// # Errors
    /// The denial in `result`.
    pub fn record<T>(
        &mut self,
        step: &'static str,
        result: Result<T, crate::Denial>,
        detail: impl FnOnce(&T) -> String,
    ) -> Result<T, crate::Denial> {
        match &result {
            Ok(v) => self.ok(step, || detail(v)),
            Err(d) => self.fail(step, d),
        }
        result
    }

    /// The steps as text lines, `ok  ` / `FAIL` then `step: detail`.
    pub fn lines(&self) -> String {
        self.steps
            .iter()
            .map(|s| {
                format!(
                    "{} {}: {}",
                    if s.ok { "ok  " } else { "FAIL" },
                    s.step,
                    s.detail
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}
