"""A toy subject for planted-answer tests: one identity block whose read-out is known.

Subclasses give ``embed(batch)`` (the residual stream h of every position) and
``logits_of(h)`` (the planted read-out, applied at every position). Every site reads h
(resid_pre.0 and resid_post.0 are the same: the block is the identity) unless
``read_of`` says otherwise; the final residual stream is ``final_of(h, logits)`` (h by
default). A sweep's perturbation arrives as
``start_resid``; interventions are not supported.
"""

from __future__ import annotations

from mi_ideas.subject import ForwardOutput, Subject, position_index, select_positions


class IdentityBlockSubject(Subject):
    def embed(self, batch):  # pragma: no cover - abstract
        raise NotImplementedError

    def logits_of(self, h):  # pragma: no cover - abstract
        raise NotImplementedError

    def final_of(self, h, logits):
        return h

    def read_of(self, site, h, final):
        return h

    def _forward(self, batch, read, positions, interventions, logits, stats, start_layer=None,
                 start_resid=None):
        from mi_ideas import trace_ops

        if interventions:
            raise NotImplementedError("a toy subject takes start_resid, not interventions")
        h = start_resid.float() if start_resid is not None else self.embed(batch)
        out_logits = self.logits_of(h)
        final = self.final_of(h, out_logits)
        out = ForwardOutput(logits=out_logits if logits else None)
        for name, site in read.items():
            out.activations[name] = select_positions(self.read_of(site, h, final), positions,
                                                     batch)
        if stats is not None and stats.wants_anything():
            out.stats = trace_ops.stats(out_logits, final, *stats.args(
                position_index(stats.positions, batch)))
        return out
