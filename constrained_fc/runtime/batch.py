"""Stage 5, batched: several conversations through our loop as one batch, one `Session` per row.

Each step every unfinished row contributes its own feed — the token it sampled plus the forced run that follows,
or a forced run alone — and all feeds go through the model in ONE forward pass, right-padded to the longest
(a ragged feed). The padding is masked out of attention and skipped by the position ids, so a row's tokens
see exactly its own history; fast-forward keeps working per row, it does not wait for every row to be forced.
Rows that finish leave the batch (their KV is dropped), so a long reply does not make short ones pay.

Greedy output equals the single-conversation loop's except where the batch's different matrix shapes round a
near-tie the other way (float arithmetic), the same caveat as transformers' own batched generate."""
from __future__ import annotations

import time

import torch
from transformers import DynamicCache

from .decoding import Result, Stats, build_result, last_logits_only, next_feed
from .matcher import allocate_bitmask
from .session import Session


def decode_batch(model, tokenizer, plans: list, prompts: list[list[int]], *, budgets: list[int],
                 fast_forward: bool, sampling: tuple, seed: int | None) -> list[Result]:
    """Decode each prompt under its plan (a `CallPlan` or `SchemaPlan`; rows may differ, e.g. by the tools
    retrieval chose for each) within its token budget (already fitted to the context). Returns one `Result`
    per prompt, in order."""
    if not prompts:
        return []
    device = model.device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else plans[0].eos_ids[0]
    gen = torch.Generator().manual_seed(seed) if seed is not None else None
    n = len(prompts)
    stats = [Stats(prompt_tokens=len(p)) for p in prompts]
    with torch.inference_mode():
        # Prefill: left-padded, so every row's last prompt token sits in the last column.
        width = max(len(p) for p in prompts)
        ids = torch.full((n, width), pad, dtype=torch.long)
        mask = torch.zeros((n, width), dtype=torch.long)
        for r, p in enumerate(prompts):
            ids[r, width - len(p):] = torch.tensor(p)
            mask[r, width - len(p):] = 1
        positions = (mask.cumsum(1) - 1).clamp(min=0)
        cache = DynamicCache()
        t0 = time.perf_counter()
        head = last_logits_only(model)
        out = model(input_ids=ids.to(device), attention_mask=mask.to(device), position_ids=positions.to(device),
                    past_key_values=cache, use_cache=True, **head)
        prompt_ms = 1e3 * (time.perf_counter() - t0)
        logits = out.logits[:, -1].float()
        n_vocab = logits.shape[-1]
        rows = [Session(plan, n_vocab, rollback=True) for plan in plans]
        next_pos = [len(p) for p in prompts]  # the position id of each row's next token
        active = list(range(n))  # rows still decoding, in the order of the cache's batch dimension
        bitmask = allocate_bitmask(n, n_vocab)  # one row per conversation, so every mask can be prefetched
        passes = 1
        t1 = time.perf_counter()
        while active:
            feeds = [next_feed(rows[r], logits[i], bitmask, r, budgets[r], fast_forward, sampling, gen)
                     for i, r in enumerate(active)]
            keep = [i for i, r in enumerate(active) if not rows[active[i]].done
                    and len(rows[active[i]].tokens) < budgets[active[i]]]
            if not keep:
                break
            if len(keep) < len(active):
                index = torch.tensor(keep, device=device)
                cache.batch_select_indices(index)
                mask = mask[keep]
                active = [active[i] for i in keep]
                feeds = [feeds[i] for i in keep]
            # One forward for every row's feed, right-padded to the longest; padding is masked out.
            width = max(len(f) for f in feeds)
            ids = torch.full((len(active), width), pad, dtype=torch.long)
            step_mask = torch.zeros((len(active), width), dtype=torch.long)
            positions = torch.zeros((len(active), width), dtype=torch.long)
            for i, (r, f) in enumerate(zip(active, feeds)):
                ids[i, :len(f)] = torch.tensor(f)
                step_mask[i, :len(f)] = 1
                positions[i] = next_pos[r] + torch.arange(width).clamp(max=len(f) - 1)
                next_pos[r] += len(f)
            mask = torch.cat([mask, step_mask], dim=1)
            for r in active:
                if fast_forward or not rows[r].next_forced():
                    rows[r].prefetch(bitmask, r)  # the next masks, computed while the forward pass runs
            # Right-padded, so each row's last token sits in its own column: the head runs on those columns.
            last = [len(f) - 1 for f in feeds]
            columns = sorted(set(last))
            at_columns = {"logits_to_keep": torch.tensor(columns, device=device)} if head else {}
            out = model(input_ids=ids.to(device), attention_mask=mask.to(device),
                        position_ids=positions.to(device), past_key_values=cache, use_cache=True, **at_columns)
            passes += 1
            at = [columns.index(c) for c in last] if head else last
            logits = out.logits[torch.arange(len(active), device=out.logits.device),
                                torch.tensor(at, device=out.logits.device)].float()
        decode_ms = 1e3 * (time.perf_counter() - t1)
    results = []
    for plan, row, st in zip(plans, rows, stats):
        # Prefill and decode run for the whole batch: each row reports the batch's time and passes.
        st.prompt_ms, st.decode_ms, st.forward_passes = prompt_ms, decode_ms, passes
        results.append(build_result(tokenizer, plan, row, st))
    return results


def is_batch(messages) -> bool:
    """A list of conversations (each a list of messages), as opposed to one conversation."""
    return (isinstance(messages, (list, tuple)) and len(messages) > 0
            and all(isinstance(m, (list, tuple)) for m in messages))

