"""Speculative decoding by prompt lookup (n-gram): drafts proposed from the sequence's own tokens, verified in
one forward, accepted by rejection sampling so the output distribution is the model's."""
