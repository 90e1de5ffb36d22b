"""Where a run's starting policy comes from: a given checkpoint, or the tiny one built here.

Owns the whole tiny-policy recipe and the cache it lands in:

- `bootstrap.tiny`: the recipe. Demonstration dialogues from the calculator
  env's scripted assistant, then a tokenizer, a model and a warm-up from
  `bootstrap.build`; the cache key (a hash of the recipe, model.tiny and
  BOOTSTRAP_VERSION) and `ensure_tiny_policy`.
- `bootstrap.build`: the torch/transformers part, blind to where its data comes
  from: a byte-level BPE tokenizer trained on text, a tiny Qwen3 / Qwen3-MoE from
  config, a supervised warm-up on (ids, loss_mask) pairs.
- `bootstrap.cache`: `cached_build`, a cache entry built once under a lock and
  moved into place whole (also used by the weight-sync benchmark's models).
- `bootstrap.policy`: `resolve_policy`, the directory a run loads (model.path or
  the tiny policy, seen through model.chat_template), and `export_tokenizer`.

Imports core and envs (for the demonstrations), torch and transformers where
they are used; neither the rollout nor the learner plane. The control plane
asks it for a directory and knows nothing of how one is built.
"""
