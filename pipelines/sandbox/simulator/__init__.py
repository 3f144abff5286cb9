"""Seeded UPI traffic simulator: ledger-v1 landing files plus a separate ground truth.

The same config and seed give byte-identical files. The population (onboarding, social graph,
merchants, account lifecycle) and every fraud case are planned up front; the bulk traffic is then
generated, vectorised, one UTC day at a time and written as it goes, so memory is bounded by a day.

Output:
    landing_dir/{transfers,accounts,labels}/date=YYYY-MM-DD/part-NNNNN.parquet  (ledger-v1)
    truth_dir/transfers.parquet   one row per transfer: is_fraud, fraud_type, case, reporting
    truth_dir/labels.parquet      every label, including those reported after the simulated end
    truth_dir/users.parquet       users, merchants and cash-out accounts with their fraud roles
    truth_dir/turns.parquet       one row per case of a typology that turns: the account that
                                  turned, the swapped shop, the quiet and the turning window

Modules, from the ground up:
    config       SimulationConfig: what to simulate
    codes        microsecond time units and integer codes for the contract's enums
    calibration  real-world tables: states, merchant categories
    draws        seeded generators and vectorised draws
    traffic      IST time-of-day and weekday profiles, each day's expected volume
    world        people, merchants, account lifecycles, VPAs and devices, planned up front
    fraud        the eight fraud typologies (three that turn) and their reporting, planned up
                 front; QR swaps divert the day's legit scans as they are made
    batch        a batch of transfers as column arrays
    legit        a day's legit transfers
    writer       simulate(): the day loop that lands the files and the ground truth
"""

from pipelines.sandbox.simulator.codes import FRAUD_TYPES, TURNING_TYPES
from pipelines.sandbox.simulator.config import SimulationConfig
from pipelines.sandbox.simulator.writer import SimulationSummary, simulate

__all__ = ["FRAUD_TYPES", "TURNING_TYPES", "SimulationConfig", "SimulationSummary", "simulate"]
