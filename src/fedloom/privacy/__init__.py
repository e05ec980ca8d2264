"""Differential privacy: client-level accounting (and, as issue 14 proceeds, DP-FedAvg's
clipping and noise as aggregation stages)."""

from fedloom.privacy.accountant import (
    ACCOUNTANTS,
    SAMPLINGS,
    PrivacySetting,
    epsilon,
    noise_multiplier_for,
)

__all__ = ["ACCOUNTANTS", "SAMPLINGS", "PrivacySetting", "epsilon", "noise_multiplier_for"]
