//! Placeholder replaced with the chart config checks below.
