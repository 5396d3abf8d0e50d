"""Native SIP, sans-I/O: the message layer (:mod:`.message`) and digest authentication
(:mod:`.digest`). Transactions and dialogs build on these.

Import what you need from the submodules; this package re-exports nothing so that importing
one piece never pulls in the others.
"""
