"""A telephony bridge: phone calls in, speech-to-speech realtime models out."""

__version__ = "0.1.0"
