"""Sweep members of one architecture as one batched computation (`--sweep-mode vmap`).

The members' parameters are stacked along a new leading axis (torch.func.stack_module_state) and the
adapter runs once per batch under `torch.func.vmap` + `functional_call`, so K tiny adapters make one
set of K-times-larger kernels instead of K sets of small ones (a 45k-parameter adapter alone leaves a
GPU idle). Each member keeps its own loss on the shared batch; one backward pass gives every member's
gradient (the members are independent, so the gradient of the summed loss is each member's own).

The update is AdamW (torch's defaults: betas 0.9/0.999, eps 1e-8, decoupled weight decay) applied to the
stacked tensors with a per-member learning rate read, every step, from each member's own optimizer and
schedule (probe/member.py `new_member`), so the schedule is exactly the one a solo run uses. Results equal
the loop to float rounding, not bit for bit: use `--sweep-mode loop` where bit-equality matters.

The members' own models and optimisers stay the record of their state: `sync` writes the stacked
parameters and AdamW moments back into them (in torch's AdamW state layout) before a resumable state is
saved, and a stack built from members that carry such state continues from it, so a resumed vmap sweep
continues exactly (and a state saved by one sweep mode can be resumed by another).
"""

from __future__ import annotations

import copy
import math
import warnings
from typing import Any

import torch
from torch import Tensor
from torch.func import functional_call, stack_module_state, vmap

from maxa.core.errors import MaxaError
from maxa.probe.member import Member, autocast, autocast_dtype
from maxa.probe.tasks import Task

BETAS = (0.9, 0.999)
EPS = 1e-8


class StackedMembers:
    """K members with the same architecture and input channels, trained as one vmapped model."""

    def __init__(self, members: list[Member]) -> None:
        if not members:
            raise ValueError("no members to stack")
        channels = {None if m.channels is None else tuple(m.channels.tolist()) for m in members}
        decays = {m.config.weight_decay for m in members}
        if len(channels) > 1 or len(decays) > 1:
            raise ValueError("stacked members must share input channels and weight decay")
        if any(m.head is not None for m in members):
            raise ValueError("stacked members cannot carry training heads (only the adapters are stacked)")
        self.members = members
        self.channels = members[0].channels
        self.weight_decay = decays.pop()
        params, buffers = stack_module_state([m.model for m in members])
        self.params: dict[str, Tensor] = params
        self.buffers: dict[str, Tensor] = buffers
        self.template = copy.deepcopy(members[0].model).to("meta")
        self.exp_avg = {k: torch.zeros_like(v) for k, v in params.items()}
        self.exp_avg_sq = {k: torch.zeros_like(v) for k, v in params.items()}
        self.steps = self._load_moments()

    def _load_moments(self) -> int:
        """Copy the members' AdamW moments (a resumed run's) into the stack; returns their step count."""
        steps = set()
        with torch.no_grad():
            for k, member in enumerate(self.members):
                for name, param in member.model.named_parameters():
                    state = member.optimizer.state.get(param)
                    if not state:
                        steps.add(0)
                        continue
                    steps.add(int(state["step"]))
                    self.exp_avg[name][k].copy_(state["exp_avg"])
                    self.exp_avg_sq[name][k].copy_(state["exp_avg_sq"])
        if len(steps) > 1:
            raise ValueError(f"stacked members must be at one step, got {sorted(steps)}")
        return steps.pop() if steps else 0

    def _forward(self, x: Tensor, output_size: tuple[int, int]) -> Tensor:
        def one(params: dict[str, Tensor], buffers: dict[str, Tensor], inputs: Tensor) -> Tensor:
            out: Tensor = functional_call(
                self.template, (params, buffers), (inputs,), {"output_size": output_size}
            )
            return out

        return vmap(one, in_dims=(0, 0, None))(self.params, self.buffers, x)

    def step(self, x: Tensor, y: Tensor, task: Task, output_size: tuple[int, int], step: int) -> list[float]:
        """One optimisation step of every member on the shared batch; returns their losses."""
        if self.channels is not None:
            x = x.index_select(-1, self.channels.to(x.device))
        if autocast_dtype(x.device) == torch.float16:
            raise MaxaError("--sweep-mode vmap needs bfloat16 autocast (this GPU only has float16); use loop")
        with autocast(x.device):
            outputs = self._forward(x, output_size)
        losses = [task.loss(outputs[k].float(), y) for k in range(len(self.members))]
        total = torch.stack(losses)
        if not torch.isfinite(total).all():
            bad = [
                m.config.lr for m, loss in zip(self.members, losses, strict=True) if not torch.isfinite(loss)
            ]
            raise MaxaError(f"training diverged at step {step} for lr {bad}; lower --sweep-lrs")
        names = list(self.params)
        grads = torch.autograd.grad(total.sum(), [self.params[n] for n in names])
        self._adamw(dict(zip(names, grads, strict=True)))
        values = total.detach().cpu().tolist()
        with warnings.catch_warnings():  # the members' own optimizers never step: only their schedules do
            warnings.simplefilter("ignore", UserWarning)
            for member, value in zip(self.members, values, strict=True):
                member.schedule.step()
                member.losses.append(float(value))
        return values

    @torch.no_grad()
    def _adamw(self, grads: dict[str, Tensor]) -> None:
        self.steps += 1
        beta1, beta2 = BETAS
        device = next(iter(self.params.values())).device
        lrs = torch.tensor([m.optimizer.param_groups[0]["lr"] for m in self.members], device=device)
        bias1 = 1 - beta1**self.steps
        bias2_sqrt = math.sqrt(1 - beta2**self.steps)
        for name, param in self.params.items():
            shape = (-1,) + (1,) * (param.ndim - 1)
            lr = lrs.to(param.device, param.dtype).reshape(shape)
            grad = grads[name]
            param.mul_(1 - lr * self.weight_decay)
            self.exp_avg[name].lerp_(grad, 1 - beta1)
            self.exp_avg_sq[name].mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            denom = (self.exp_avg_sq[name].sqrt() / bias2_sqrt).add_(EPS)
            param.sub_((lr / bias1) * self.exp_avg[name] / denom)

    def sync(self) -> None:
        """Copy each member's slice of the stacked parameters into its own model, and of the AdamW moments
        into its own optimiser (copies: a saved state holds no view of the whole stack)."""
        with torch.no_grad():
            for k, member in enumerate(self.members):
                state: dict[str, Any] = {n: p[k] for n, p in self.params.items()}
                state.update({n: b[k] for n, b in self.buffers.items()})
                member.model.load_state_dict(state, strict=False)
                if not self.steps:
                    continue
                for name, param in member.model.named_parameters():
                    member.optimizer.state[param] = {
                        "step": torch.tensor(float(self.steps)),
                        "exp_avg": self.exp_avg[name][k].clone(),
                        "exp_avg_sq": self.exp_avg_sq[name][k].clone(),
                    }
