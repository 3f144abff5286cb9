"""UPI risk and adoption data platform."""
