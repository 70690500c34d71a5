#!/usr/bin/env python
"""Mutation run: plant plausible bugs in nnx one at a time and check that the test suite notices.

    python tools/mutate.py                      # every mutant, numpy backends (fast paths + portable)
    python tools/mutate.py --list               # the table, and whether each snippet still matches
    python tools/mutate.py --only adam_*        # some mutants (names or fnmatch patterns, repeatable)
    python tools/mutate.py --backends numpy,array_api_strict

Each mutant is one or more exact (file, original snippet, replacement) edits. The original snippet
must occur exactly once in the file, or the run stops before testing anything: when the code moves,
update the table rather than let a mutant silently test nothing.

Nothing is ever written into the checkout. The run snapshots the checkout (tracked files plus
untracked, non-ignored ones, as ``git ls-files`` lists them) into private workspaces under the
temporary directory, laid out as the installed package is (``src/nnx`` with ``src/nnx/backends``
from ``backends/``, per pyproject's package-dir), and runs

    NNX_TEST_BACKENDS=<backends> python -m pytest -x -q -p no:cacheprovider <workspace>/tree/tests

from the workspace root with ``PYTHONPATH=<workspace>/src``, restoring the mutated file after each
mutant. First the unmutated snapshot must pass (the baseline), then each mutant is
killed (the suite fails), survived (the suite passes) or error (timeout, a mutant that does not
compile, or pytest itself failing). At most two mutants run at once.

Exit status: 0 every mutant killed; 1 some survived; 2 errors, stale snippets or a failing baseline.
"""
from __future__ import annotations

import argparse
import fnmatch
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAX_JOBS = 2


@dataclass(frozen=True)
class Edit:
    file: str  # relative to the repository root
    original: str  # must occur exactly once in the file
    replacement: str


@dataclass(frozen=True)
class Mutant:
    name: str
    edits: tuple[Edit, ...]
    bug: str  # the careless change it stands for
    killer: str  # a test that would notice it


def M(name: str, file: str, original: str, replacement: str, bug: str, killer: str) -> Mutant:
    return Mutant(name, (Edit(file, original, replacement),), bug, killer)


MODELS, TRAINING, OPS, NPOPS = "nnx/models.py", "nnx/training.py", "nnx/ops.py", "backends/numpy_ops.py"
CORE, ACT, LOSSES, OPT = "nnx/layers/core.py", "nnx/activations.py", "nnx/losses.py", "nnx/optimizers.py"
REG, INIT, CBS = "nnx/regularizers.py", "nnx/initializers.py", "nnx/callbacks.py"

MUTANTS: list[Mutant] = [
    # -- batching and shuffling -------------------------------------------------------------
    M("shuffle_ignored", MODELS,
      "rng=self._shuffle_rng if shuffle else None", "rng=None",
      "fit(shuffle=True) trains on the natural order",
      "fit(shuffle=True) vs fit(shuffle=False) from the same weights end with different weights; "
      "or a callback recording each batch sees a permuted order"),
    M("permutation_cached_across_epochs", TRAINING,
      "order = self.rng.permutation(n)",
      'order = self.__dict__.setdefault("_order", self.rng.permutation(n))',
      "the shuffle order is drawn once and reused every epoch",
      "iterate one Batches(rng=...) twice: the two epochs' orders differ"),
    M("permutation_fixed_generator", TRAINING,
      "order = self.rng.permutation(n)",
      'order = __import__("numpy").random.default_rng(0).permutation(n)',
      "the permutation comes from a fresh generator with a fixed seed",
      "two epochs (or two seeds) give different batch orders"),
    M("shuffle_x_not_y", TRAINING,
      "return [self.backend.xp.take(a, idx, axis=0) for a in self.arrays]",
      "return [self.backend.xp.take(self.arrays[0], idx, axis=0), *(a[:idx.shape[0], ...] for a in self.arrays[1:])]",
      "x is shuffled, y is taken from the first rows of the data in every batch",
      "with shuffle, every batch pairs each x row with its own y (e.g. y = x[:, 0] exactly)"),
    M("validation_split_ceil", MODELS,
      "split = int(math.floor(n_all * (1.0 - float(validation_split))))",
      "split = int(math.ceil(n_all * (1.0 - float(validation_split))))",
      "validation_split rounds the training part up instead of down (Keras: floor)",
      "n=10, validation_split=0.25: 7 training samples (steps/params or a counting callback), 3 validation"),
    # -- training loop --------------------------------------------------------------------
    M("evaluate_training_mode", TRAINING,
      "p = model.forward(xb, training=False)[0]", "p = model.forward(xb, training=not in_fit)[0]",
      "evaluate() runs the layers in training mode (dropout active)",
      "a model with Dropout(0.5): evaluate() twice gives equal results, equal to the loss of predict()"),
    M("validation_training_mode", TRAINING,
      "p = model.forward(xb, training=False)[0]", "p = model.forward(xb, training=in_fit)[0]",
      "validation inside fit runs the layers in training mode",
      "with Dropout, val_loss of the last epoch equals evaluate(x_val, y_val) after fit"),
    M("predict_training_mode", TRAINING,
      "outputs.append(model.forward(xb, training=False)[0])",
      "outputs.append(model.forward(xb, training=True)[0])",
      "predict() runs the layers in training mode",
      "a model with Dropout: predict() is deterministic and equals model(x)"),
    Mutant("loss_mean_of_batch_means", (
        Edit(TRAINING, "total = total + xp.sum(stacked * xp.asarray(counts, dtype=self._to, device=_device(stacked)))",
             "total = total + xp.sum(stacked) * (self.count / len(counts))"),),
        "the epoch loss divides the sum of batch losses by the number of batches, not of samples",
        "evaluate with n=10, batch_size=4 (a partial last batch) equals the loss of one full batch"),
    M("on_batch_begin_never_called", CBS,
      '"""Called before each training batch; by default calls ``on_batch_begin``."""\n'
      "        self.on_batch_begin(batch, logs)",
      '"""Called before each training batch; by default calls ``on_batch_begin``."""\n',
      "a callback's on_batch_begin is never called during fit",
      "a callback overriding only on_batch_begin is called once per step"),
    M("stop_skips_validation", TRAINING,
      "if validation is not None:\n                logs.update(",
      "if validation is not None and not model._stop_now:\n                logs.update(",
      "the epoch TerminateOnNaN stops skips validation (Keras still validates it)",
      "TerminateOnNaN with validation_data: the history of the stopped epoch has val_loss"),
    M("early_stopping_keeps_first_weights", CBS,
      "            if self.restore_best_weights:\n                self.best_weights = self.model.get_weights()\n",
      "",
      "EarlyStopping(restore_best_weights=True) never updates its copy after an improvement",
      "EarlyStopping(restore_best_weights=True) on a loss that improves then worsens restores the best "
      "epoch's weights (saved with a callback), not the first epoch's"),
    M("monitor_min_delta_sign", CBS,
      "return value + self.min_delta < reference", "return value - self.min_delta < reference",
      "in mode 'min', min_delta makes improvements easier instead of harder",
      "EarlyStopping(monitor='loss', min_delta=big) stops after patience epochs though the loss falls a little"),
    M("initial_epoch_ignored", TRAINING,
      "for epoch in range(initial_epoch, epochs):", "for epoch in range(0, epochs):",
      "fit(initial_epoch=k) still runs every epoch from 0",
      "fit(epochs=5, initial_epoch=3) records history.epoch == [3, 4]"),
    M("evaluate_without_penalty", TRAINING,
      'logs["loss"] += float(model.regularization_loss())', "pass",
      "evaluate's loss leaves out the weight penalties",
      "a model with an l2 kernel regularizer: evaluate loss = data loss + l2 * sum(w^2)"),
    # -- model chain ----------------------------------------------------------------------
    M("backward_stop_off_by_one", MODELS,
      "if not weights:\n                        first = i\n", "if not weights:\n                        first = i + 1\n",
      "the backward pass stops one layer too early: the first trainable layer gets no gradient",
      "a two-Dense model: one train_on_batch changes the first Dense's kernel"),
    # -- layers ---------------------------------------------------------------------------
    M("dropout_backward_unscaled", CORE,
      "return self.xp.where(keep, dy * (1.0 / (1.0 - self.rate)), 0.0), {}",
      "return self.xp.where(keep, dy, 0.0), {}",
      "Dropout's backward forgets the 1 / (1 - rate) scale",
      "Dropout backward: dx == dy / (1 - rate) where kept, 0 elsewhere (or a finite-difference check "
      "with the mask held fixed)"),
    M("dropout_keeps_rate", CORE,
      "keep = self.backend.uniform(tuple(x.shape), x.dtype) >= self.rate",
      "keep = self.backend.uniform(tuple(x.shape), x.dtype) < self.rate",
      "Dropout keeps a fraction rate instead of 1 - rate",
      "Dropout(0.2) in training zeroes about 20% of a large input"),
    M("dropout_at_inference", CORE,
      "if not training or self.rate == 0.0:", "if self.rate == 0.0:",
      "Dropout drops in inference too",
      "Dropout layer called with training=False is the identity"),
    M("activation_layer_backward_identity", CORE,
      "return self.ops.activation_backward(self.activation, dy, saved), {}", "return dy, {}",
      "the Activation layer's backward ignores its activation",
      "finite-difference gradient check of Dense(linear) + Activation('tanh') with MSE"),
    M("layer_forward_pair_unchecked", MODELS,
      'raise _broken_contract(layers[i], "forward", "(y, saved)", out)\n                    x = out[0]',
      'pass\n                    x = out[0]',
      "inference takes the first row of a layer's bare output as the batch's output",
      "predict with a layer whose forward returns the output alone raises TypeError naming it"),
    M("gradient_keys_unchecked", MODELS,
      "if w.regularizer is not None or w not in grads:", "if w.regularizer is not None:",
      "a gradient keyed by a frozen weight replaces a trainable weight's missing one",
      "a layer whose backward keys its gradient by its non-trainable weight is refused"),
    M("gradient_shape_unchecked", "nnx/data.py",
      'if tuple(getattr(g, "shape", ())) != tuple(w.value.shape):', "if False:",
      "a gradient of the wrong shape reaches the optimizer",
      "a layer whose backward returns a gradient of another shape is refused before any weight changes"),
    M("dense_caches_at_inference", CORE,
      "        return y, (x, act_saved)\n",
      "        self._last = (x, act_saved)\n        return y, (x, act_saved)\n",
      "Dense keeps its input and activation on the layer in every forward, inference included",
      "after predict/evaluate, no layer attribute holds an array of the batch"),
    M("bias_grad_all_axes", CORE,
      "grads[self.bias] = ops.sum_rows(dz2)", "grads[self.bias] = xp.sum(dz2)",
      "Dense's bias gradient sums over every axis (a scalar broadcast to every unit)",
      "gradient check of a Dense bias with units > 1; or the gradient's shape equals the bias's"),
    M("reshape_backward_to_output_shape", CORE,
      "return self.xp.reshape(x, (x.shape[0], *self.output_shape)), None\n\n    def backward(self, saved, dy, need_dx=True):\n"
      "        return self.xp.reshape(dy, (dy.shape[0], *self.input_shape)), {}",
      "return self.xp.reshape(x, (x.shape[0], *self.output_shape)), None\n\n    def backward(self, saved, dy, need_dx=True):\n"
      "        return self.xp.reshape(dy, (dy.shape[0], *self.output_shape)), {}",
      "Reshape's backward keeps the output shape instead of restoring the input's",
      "Reshape below a Dense: finite differences of the Dense's weights"),
    M("softmax_layer_last_axis", CORE,
      "return y * (dy - xp.sum(dy * y, axis=self.axis, keepdims=True))",
      "return y * (dy - xp.sum(dy * y, axis=-1, keepdims=True))",
      "Softmax(axis=1)'s backward sums over the last axis",
      "Softmax(axis=1) on (batch, 3, 4): finite differences through a model"),
    M("flatten_backward_wrong_shape", CORE,
      "return self.xp.reshape(x, (x.shape[0], -1)), None\n\n    def backward(self, saved, dy, need_dx=True):\n"
      "        return self.xp.reshape(dy, (dy.shape[0], *self.input_shape)), {}",
      "return self.xp.reshape(x, (x.shape[0], -1)), None\n\n    def backward(self, saved, dy, need_dx=True):\n"
      "        return self.xp.reshape(dy, (dy.shape[0], *self.input_shape[::-1])), {}",
      "Flatten's backward reshapes to the wrong sample shape",
      "Flatten backward on (n, 2, 3) input returns dx of shape (n, 2, 3) equal to dy reshaped"),
    # -- activations ----------------------------------------------------------------------
    M("softmax_axis0_portable", ACT,
      "        return e / xp.sum(e, axis=-1, keepdims=True)",
      "        return e / xp.sum(e, axis=0, keepdims=True)",
      "the portable softmax normalises over the batch axis",
      "softmax output rows sum to 1 for a batch of more than one row (portable config)"),
    M("softmax_axis0_numpy", NPOPS,
      "z /= np.add.reduce(z, axis=-1, keepdims=True)", "z /= np.add.reduce(z, axis=0, keepdims=True)",
      "the NumPy softmax kernel normalises over the batch axis",
      "Dense(softmax) outputs' rows sum to 1 on the numpy config (kernel vs portable)"),
    M("tanh_derivative_portable", ACT,
      "return dy * (1.0 - y * y)", "return dy * (1.0 - y)",
      "tanh' = 1 - y instead of 1 - y^2 (portable)",
      "tanh backward at known points equals 1 - tanh(x)^2"),
    M("tanh_derivative_numpy", NPOPS,
      "dx = y * y\n    np.subtract(1, dx, out=dx)", "dx = y.copy()\n    np.subtract(1, dx, out=dx)",
      "tanh' = 1 - y instead of 1 - y^2 (NumPy kernel)",
      "ops.activation_backward(Tanh) on the numpy config equals 1 - y^2"),
    M("relu_backward_at_zero", NPOPS,
      "_select(np.greater(y, 0), dy, dx)", "_select(np.greater_equal(y, 0), dy, dx)",
      "the NumPy ReLU kernel passes the gradient where the output is 0 (negative inputs)",
      "ReLU backward on negative inputs is 0 (numpy config)"),
    M("elu_saves_x", ACT,
      'name = "elu"\n    saves = "y"', 'name = "elu"\n    saves = "x"',
      "ELU declares it saves x while its backward computes from y",
      "finite-difference gradient check of ELU at negative inputs"),
    # -- losses ---------------------------------------------------------------------------
    M("sce_no_upper_clip_numpy", NPOPS,
      "        np.minimum(picked, 1.0 - eps, out=picked)\n", "",
      "the NumPy sparse cross-entropy kernel clips probabilities from below only",
      "a perfect one-hot prediction has loss -log(1 - 1e-7), not 0 (numpy config)"),
    M("sce_no_upper_clip_portable", OPS,
      "xp.log(clip(xp, picked, eps, 1.0 - eps))", "xp.log(clip(xp, picked, eps, None))",
      "the portable sparse cross-entropy clips probabilities from below only",
      "a perfect one-hot prediction has loss -log(1 - 1e-7), not 0 (portable config)"),
    M("categorical_fused_assumes_unit_rows", LOSSES,
      "return loss, _rows(xp, (p * xp.sum(t, axis=-1, keepdims=True) - t) * (1.0 / n), sample_weight)",
      "return loss, _rows(xp, (p - t) * (1.0 / n), sample_weight)",
      "the fused softmax + categorical gradient assumes each target row sums to 1",
      "fused vs unfused logit gradient with targets rows summing to 0.5 or 2 (label smoothing, scaled targets)"),
    M("binary_fused_scale_batch_only", LOSSES,
      "_rows(xp, (p - self._targets(y)) * (1.0 / _count(p.shape)), sample_weight))",
      "_rows(xp, (p - self._targets(y)) * (1.0 / p.shape[0]), sample_weight))",
      "the fused sigmoid + binary gradient divides by the batch, not by every entry",
      "sigmoid + binary cross-entropy with 3 units: fused gradient equals the unfused one"),
    M("weighted_mean_over_sum_of_weights", LOSSES,
      "return xp.sum(v if w is None else v * w) * (1.0 / v.shape[0])",
      "return xp.sum(v if w is None else v * w) / (v.shape[0] if w is None else xp.sum(w))",
      "a weighted loss divides by the sum of the weights, not by the batch size (Keras's sum_over_batch_size)",
      "evaluate(sample_weight=w) equals sum(w * loss) / n"),
    M("sparse_fused_weights_not_in_gradient", LOSSES,
      "return loss, _rows(xp, dz, sample_weight)", "return loss, dz",
      "the fused softmax + sparse cross-entropy ignores the sample weights in its gradient",
      "weighted gradients through a softmax model against finite differences"),
    M("binary_label_smoothing_not_fused", LOSSES,
      "_rows(xp, (p - self._targets(y)) * (1.0 / _count(p.shape)), sample_weight))",
      "_rows(xp, (p - y) * (1.0 / _count(p.shape)), sample_weight))",
      "label smoothing is applied to the loss but not to the fused sigmoid gradient",
      "sigmoid + smoothed binary cross-entropy gradients against finite differences"),
    M("hinge_labels_not_converted", LOSSES,
      "return xp.where(binary, 2.0 * y - 1.0, y)", "return y",
      "hinge uses 0/1 labels as they are instead of converting them to -1/1",
      "hinge with 0/1 labels equals hinge with -1/1 labels"),
    M("stateful_metric_reset_each_batch", TRAINING,
      "            metric.update(self.xp, y, p)", "            metric.reset()\n            metric.update(self.xp, y, p)",
      "precision/recall/AUC counts start over at each batch instead of accumulating over the epoch",
      "precision over 13 batches equals scikit-learn's over all rows"),
    M("sample_weight_not_shuffled", TRAINING,
      "batch = [a[idx] for a in self.arrays]",
      "batch = [a[idx] for a in self.arrays[:2]] + [a[start:stop] for a in self.arrays[2:]]",
      "the sample weights are sliced in natural order while x and y are shuffled",
      "a recording loss sees each row's id paired with its own weight in every shuffled batch"),
    # -- optimizers -----------------------------------------------------------------------
    M("rmsprop_eps_outside_sqrt_portable", OPS,
      "w -= lr * g / self.xp.sqrt(v + epsilon)", "w -= lr * g / (self.xp.sqrt(v) + epsilon)",
      "RMSprop adds epsilon after the square root (portable)",
      "one RMSprop step with a large epsilon (e.g. 0.1) matches lr g / sqrt(v + eps)"),
    M("rmsprop_eps_outside_sqrt_numpy", NPOPS,
      "g /= np.sqrt(v + t(epsilon))", "g /= np.sqrt(v) + t(epsilon)",
      "RMSprop adds epsilon after the square root (NumPy kernel)",
      "one RMSprop step with a large epsilon on the numpy config matches lr g / sqrt(v + eps)"),
    M("sgd_momentum_sign_portable", OPS,
      "velocity -= step\n        if nesterov:", "velocity += step\n        if nesterov:",
      "SGD momentum accumulates +lr g (ascent) in the portable update",
      "two SGD(momentum=0.9) steps on a known gradient give the hand-computed weights (portable)"),
    M("sgd_momentum_sign_numpy", NPOPS,
      "velocity -= g\n            if nesterov:", "velocity += g\n            if nesterov:",
      "SGD momentum accumulates +lr g (ascent) in the NumPy kernel",
      "two SGD(momentum=0.9) steps on a known gradient give the hand-computed weights (numpy)"),
    M("sgd_blas_momentum_sign", NPOPS,
      "blas.axpby(-lr, g, momentum, velocity)", "blas.axpby(lr, g, momentum, velocity)",
      "SGD momentum through BLAS accumulates +lr g (ascent)",
      "the BLAS SGD update against the portable one, every SGD variant (numpy)"),
    M("sgd_blas_nesterov_dropped", NPOPS,
      "blas.axpy(momentum, velocity, w)\n                        blas.axpy(-lr, g, w)",
      "blas.axpy(1.0, velocity, w)",
      "Nesterov momentum through BLAS falls back to plain momentum",
      "the BLAS SGD update against the portable one, nesterov (numpy)"),
    M("epoch_sums_unweighted", TRAINING,
      "total = total + xp.sum(stacked * xp.asarray(counts, dtype=self._to, device=_device(stacked)))",
      "total = total + xp.sum(stacked)",
      "the epoch's loss sums the batch losses without weighing each by its samples",
      "the running loss is the sample-weighted mean of the batch losses"),
    M("epoch_sums_equal_batches_unweighted", TRAINING,
      "total = total + xp.sum(stacked) * counts[0]", "total = total + xp.sum(stacked)",
      "the epoch's loss, read while its batches are of one size, forgets their sample count",
      "the running loss is the sample-weighted mean of the batch losses"),
    M("fused_update_never_taken", NPOPS,
      "        self.defers_matmuls = (self.blas is not None", "        self.defers_matmuls = False and (self.blas is not None",
      "the NumPy backend declares the fused kernel update but never takes it",
      "fit's SGD through BLAS runs one gemm per kernel after the first step (numpy)"),
    M("deferred_sgd_sign", NPOPS,
      "blas.gemm_tn(-lr, x, dz, 1.0, w)", "blas.gemm_tn(lr, x, dz, 1.0, w)",
      "the fused kernel update adds the gradient instead of subtracting it",
      "fit through the deferred products against the portable update (numpy)"),
    M("deferred_sgd_overwrites_weight", NPOPS,
      "blas.gemm_tn(-lr, x, dz, 1.0, w)", "blas.gemm_tn(-lr, x, dz, 0.0, w)",
      "the fused kernel update writes the step over the weight (beta 0, not 1)",
      "fit through the deferred products against the portable update (numpy)"),
    M("deferred_momentum_not_applied", NPOPS,
      "blas.gemm_tn(-lr, x, dz, momentum, velocity)\n                    blas.axpy(1.0, velocity, w)",
      "blas.gemm_tn(-lr, x, dz, momentum, velocity)",
      "the fused momentum update forgets to add the velocity to the weight",
      "fit through the deferred products against the portable update, momentum (numpy)"),
    M("deferred_after_user_layers", MODELS,
      "            if not _keeps_outputs(layer):\n                break",
      "            if False:\n                break",
      "kernel products deferred past a user's layer that writes into its outputs in backward",
      "a Dense after a user's layer trains as the portable update (numpy)"),
    M("deferred_after_user_activation", MODELS,
      "return act is None or (_registry.builtin(type(act)) and not _hooked(act, (\"forward\", \"backward\")))",
      "return True",
      "kernel products deferred past a user's activation that writes into its saved output",
      "a Dense after a user's activation trains as the portable update (numpy)"),
    M("deferred_to_overriding_subclass", "nnx/layers/base.py",
      "                if not issubclass(owner, where):\n                    cls.defers_gradients = False\n                    return",
      "                pass",
      "a Dense subclass (or mixin) that works on its gradients is handed deferred products",
      "a Dense subclass that scales its gradients trains as the portable update (numpy)"),
    M("deferred_to_overriding_model", MODELS,
      "        if (cls is not Sequential and any(getattr(cls, name) is not getattr(Sequential, name) for name in _MODEL_HOOKS)) \\\n                or _hooked(self, _MODEL_HOOKS):",
      "        if False:",
      "a Sequential subclass's own compute_gradients / backward / apply_gradients skipped or handed products",
      "fit calls a subclass's compute_gradients, backward and apply_gradients, with arrays (numpy)"),
    M("deferring_left_on", MODELS,
      "            if token is not None:\n                _ops.DEFERRING.reset(token)",
      "            pass",
      "the deferring flag stays set after fit's backward pass",
      "compute_gradients called from a callback during fit hands out arrays (numpy)"),
    M("deferred_after_array_updates", NPOPS,
      "            if type(g) is not DeferredMatmul:\n                arrays.append((w, g, velocity))\n                continue",
      "            if type(g) is not DeferredMatmul:\n                NumpyOps._sgd_updates(self, [(w, g, velocity)], lr, momentum, nesterov)\n                continue",
      "the deferred products run after gradient arrays were scaled in place (one of them may be a factor)",
      "a linear Dense before a layer whose weight gradient is its dx trains as the portable update (numpy)"),
    M("deferral_decided_once", TRAINING,
      "            self._deferring = None  # a callback may have changed the model: asked again at the next step",
      "            pass",
      "which layers defer is not worked out again after the epoch's callbacks: their changes are not seen",
      "a callback's change to the model mid-fit takes effect at the next step (numpy)"),
    M("sums_keep_user_losses", TRAINING,
      "        if self._keep:\n            self._losses.append(loss)",
      "        if True:\n            self._losses.append(loss)",
      "the epoch sums keep a user loss's array, which it may refill the next batch",
      "the epoch loss of a loss that reuses its array"),
    M("deferred_product_transposed", "backends/numpy_blas.py",
      "_ROW_MAJOR, _TRANS, _NO_TRANS, m, n, k", "_ROW_MAJOR, _NO_TRANS, _NO_TRANS, m, n, k",
      "gemm reads x without its transpose",
      "gemm_tn against NumPy's a.T @ b; fit against the portable update (numpy)"),
    M("nesterov_ignored_portable", OPS,
      "w += momentum * velocity - step", "w += velocity",
      "Nesterov momentum falls back to plain momentum (portable)",
      "SGD(momentum=0.9, nesterov=True) differs from nesterov=False after two steps, by the formula"),
    M("adam_no_bias_correction", OPT,
      "return lr * math.sqrt(1.0 - self.beta_2**t) / (1.0 - self.beta_1**t)",
      "return lr",
      "Adam without bias correction",
      "Adam's first step moves each weight by about lr * sign(g)"),
    Mutant("adam_keeps_initial_lr", (
        Edit(OPT, "global_clipnorm=global_clipnorm)\n        self.beta_1 = ",
             "global_clipnorm=global_clipnorm)\n        self._initial_lr = float(learning_rate)\n        self.beta_1 = "),
        Edit(OPT, "ops.adam_update(w, g, slots[0], slots[1], _like(self.step_size(lr), w),",
             "ops.adam_update(w, g, slots[0], slots[1], _like(self.step_size(self._initial_lr), w),")),
        "Adam's step reads a copy of the learning rate taken in __init__",
        "set optimizer.learning_rate = 0 after compile: an Adam step leaves the weights unchanged "
        "(or ReduceLROnPlateau/LearningRateScheduler changes the step)"),
    M("adamw_decay_after_the_step_portable", OPS,
      "w -= w * decay\n        self.adam_update(w, g, m, v, step_size, beta_1, beta_2, epsilon)",
      "self.adam_update(w, g, m, v, step_size, beta_1, beta_2, epsilon)\n        w -= w * decay",
      "AdamW decays the weight after the Adam step instead of before it (Keras 3's order)",
      "two AdamW steps with a large weight decay against the float64 reference of Keras's rule"),
    M("adagrad_eps_dropped_numpy", NPOPS,
      "np.add(accumulator, t(epsilon), out=root)", "np.add(accumulator, t(0.0), out=root)",
      "Adagrad's NumPy kernel forgets epsilon under the square root",
      "an Adagrad step from a zero accumulator with a gradient of 1e-4 (epsilon dominates)"),
    M("adagrad_accumulator_starts_at_zero", OPT,
      "        return self.initial_accumulator_value", "        return 0.0",
      "Adagrad's accumulators start at 0 instead of initial_accumulator_value",
      "the accumulator after one step is initial + g^2"),
    M("schedule_read_after_the_step_count", OPT,
      "        lr = self.learning_rate if self._device_scalars is None else self._device_scalars[0]\n",
      "        self.iterations += 1\n        lr = self.learning_rate\n        self.iterations -= 1\n",
      "a schedule is evaluated at iterations + 1 (the step after the one taken)",
      "fit with a schedule: the weights after 6 SGD steps match schedule(0) ... schedule(5), not one step later"),
    M("global_clipnorm_per_weight", OPT,
      "if self.clipnorm is not None:\n            c = self.clipnorm",
      "if self.clipnorm is not None or self.global_clipnorm is not None:\n            c = self.clipnorm or self.global_clipnorm",
      "global_clipnorm clips each gradient by its own norm",
      "two weights whose joint norm is 13: both gradients divided by 13"),
    # -- regularizers and initializers ----------------------------------------------------
    M("l1_gradient_sign", REG,
      "g = g + self.l1 * xp.sign(w)", "g = g - self.l1 * xp.sign(w)",
      "L1's gradient has the wrong sign",
      "finite-difference check of an l1-regularised Dense's kernel gradient"),
    M("l2_gradient_no_factor_2", REG,
      "g = g + (2.0 * self.l2) * w", "g = g + self.l2 * w",
      "L2's gradient misses its factor 2",
      "finite-difference check of an l2-regularised Dense's kernel gradient"),
    M("glorot_uniform_fan_in", INIT,
      'GlorotUniform = _preset("GlorotUniform", "glorot_uniform", 1.0, "fan_avg", "uniform")',
      'GlorotUniform = _preset("GlorotUniform", "glorot_uniform", 1.0, "fan_in", "uniform")',
      "glorot_uniform scaled by fan_in alone",
      "glorot_uniform on a (100, 10) kernel has max |w| close to sqrt(6 / 110), not sqrt(6 / 100)"),
    # -- a convolution and its max pooling run as one; NumPy convolution and pooling kernels --
    M("pooled_bias_gradient_before_activation", "nnx/layers/conv.py",
      "grads[self.bias] = self.ops.sum_rows(self.xp.reshape(dp, (-1, self.filters)))",
      "grads[self.bias] = self.ops.sum_rows(self.xp.reshape(dy, (-1, self.filters)))",
      "the pooled pair's bias gradient sums the output gradient, not the one through the ReLU",
      "finite differences through Conv2D(relu) + MaxPooling2D; the pair against the layers one by one"),
    M("pooled_any_activation", "nnx/layers/conv.py",
      "return type(pool) in max_pools and type(self.activation) in (_activations.ReLU, _activations.Linear)",
      "return type(pool) in max_pools and self.activation is not None",
      "any activation is moved after the max pooling (swish does not commute with max)",
      "Conv2D(swish) + MaxPooling2D: the model's output equals the layers applied one by one"),
    M("pooled_activation_backward_skipped", CORE,
      "dp = self.ops.activation_backward(self.activation, dy, act_saved)\n        return pool.backward(",
      "dp = dy\n        return pool.backward(",
      "an Activation(relu) run with its max pooling passes the gradient through without the ReLU's mask",
      "BatchNormalization -> Activation(relu) -> MaxPooling2D against the layers one by one and finite differences"),
    M("pooled_forward_drops_the_bias", "nnx/layers/conv.py",
      "y, act_saved = self.ops.bias_activation(p, self.bias.value if self.use_bias else None, self.activation)",
      "y, act_saved = self.ops.bias_activation(p, None, self.activation)",
      "the pooled pair forgets the bias it moved after the pooling",
      "the pair against the layers one by one with a random bias"),
    M("tap_major_im2col_channel_order", "backends/numpy_conv.py",
      "np.copyto(taps[k, :, q], xpad[:, r, s, :].transpose(3, 0, 1, 2))",
      "np.copyto(taps[k, :, q], xpad[:, r, s, ::-1].transpose(3, 0, 1, 2))",
      "the tap-major patches of a few-channel input take the channels in reverse order",
      "the NumPy convolution kernels against the portable code with 3 input channels"),
    M("pooled_conv_ties_not_resolved", "backends/numpy_conv.py",
      "_first_marks(list(mask))  # ties", "pass  # ties",
      "the convolution with its max pooling sends a tied window's gradient to every maximum",
      "the NumPy convolution with max pooling against the portable code on integer inputs"),
    M("pooled_conv_window_position_order", "backends/numpy_conv.py",
      "        a, b = divmod(q, pw)\n", "        b, a = divmod(q, ph)\n",
      "the strided-view patches of the pooled convolution take the window positions column-first",
      "the NumPy convolution with max pooling against the portable code, 6 channels, a 2x3 window"),
    M("tiled_max_pool_ties_not_resolved", "backends/numpy_conv.py",
      "_first_marks([mask[:, :, i, :, j, :] for i in range(ph) for j in range(pw)])",
      "pass",
      "the tiled max pooling routes a tied window's gradient to every maximum, not the first",
      "the NumPy tiled pooling against the portable code on inputs with many ties"),
    # -- steps recorded as device graphs (compile(jit_compile=True)) ---------------------------
    M("recorded_step_keeps_first_rate", TRAINING,
      "            self.lr[...] = lr\n", "",
      "a replayed step keeps the rate it was recorded with: schedules and callbacks do nothing",
      "jit_compile with an ExponentialDecay schedule trains as step by step"),
    M("recorded_step_count_frozen", TRAINING,
      "        self.t += 1.0\n", "",
      "Adam's step count stops at the recorded value inside a replayed step",
      "jit_compile with Adam trains as step by step"),
    M("recorded_step_count_not_resynced", TRAINING,
      "            self.t[...] = float(opt.iterations)\n", "            pass\n",
      "the device step count is not brought back in line after steps run one by one",
      "jit_compile with Adam: fit's first step runs as it comes, the replays after it"),
    M("recorded_sums_not_reset", TRAINING,
      "                sums.reset()\n", "",
      "the in-place epoch sums of recorded steps carry over from one epoch to the next",
      "jit_compile: the History's losses equal the step-by-step ones over three epochs"),
    M("recorded_step_binding_unchecked", TRAINING,
      "if rec.recorded is None or rec.bound[1] != self._bindings()[1]:",
      "if rec.recorded is None:",
      "after set_weights replaces the weight arrays, replays keep training the old ones",
      "jit_compile with a callback calling set_weights mid-epoch trains as step by step"),
    M("recorded_step_settings_unchecked", TRAINING,
      "trainable = (tuple(map(id, model.trainable_weights)), _trainable_flags(model))", "trainable = ()",
      "freezing a layer mid-fit leaves replays training it (and its BatchNormalization in training mode)",
      "jit_compile with a callback freezing two layers after the first epoch trains as step by step"),
    M("recorded_step_optimizer_numbers_unchecked", TRAINING,
      "return arrays, (tuple(map(id, arrays)), tuple(map(id, opt._slots)), trainable, numbers)",
      "return arrays, (tuple(map(id, arrays)), tuple(map(id, opt._slots)), trainable)",
      "changing an optimizer's momentum mid-fit leaves replays using the recorded value",
      "jit_compile with a callback setting momentum to 0 after the first epoch trains as step by step"),
    M("clip_bounds_swapped", OPS,
      "        x = xp.maximum(x, low)\n", "        x = xp.minimum(x, low)\n",
      "the shared clip takes the minimum with the lower bound",
      "cross-entropy and KL divergence values against hand-computed references"),
    M("im2col_column_blocks_reversed", "nnx/conv_ops.py",
      "            out[..., k * c:(k + 1) * c] = x[:, rows, cols, :]",
      "            out[..., (len(taps) - 1 - k) * c:(len(taps) - k) * c] = x[:, rows, cols, :]",
      "the portable im2col puts the taps' column blocks in reverse order",
      "convolutions against a direct loop and finite differences"),
]


# -- workspaces -----------------------------------------------------------------------------
def snapshot_files(root: str) -> list[str]:
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                         cwd=root, capture_output=True, check=True).stdout
    return sorted({p for p in out.decode().split("\0") if p and os.path.isfile(os.path.join(root, p))})


def src_path(rel: str) -> str | None:
    """Where ``rel`` (a repository path) lands in the installed layout, or None outside the package."""
    if rel.startswith("nnx/"):
        return rel
    if rel.startswith("backends/"):
        return "nnx/" + rel
    return None


class Workspace:
    """A private copy: ``tree/`` (the checkout's files) and ``src/nnx`` (the package, backends included)."""

    def __init__(self, base: str, files: list[str], root: str, index: int):
        self.dir = os.path.join(base, f"ws{index}")
        self.tree = os.path.join(self.dir, "tree")
        self.src = os.path.join(self.dir, "src")
        for rel in files:
            for dest in (os.path.join(self.tree, rel), *((os.path.join(self.src, s),) if (s := src_path(rel)) else ())):
                os.makedirs(os.path.dirname(dest), exist_ok=True)
                shutil.copy2(os.path.join(root, rel), dest)

    def targets(self, rel: str) -> list[str]:
        s = src_path(rel)
        return [os.path.join(self.tree, rel), *((os.path.join(self.src, s),) if s else ())]

    def write(self, rel: str, text: str) -> None:
        for path in self.targets(rel):
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)

    def env(self, backends: str) -> dict:
        env = dict(os.environ)
        env["PYTHONPATH"] = self.src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        env["NNX_TEST_BACKENDS"] = backends
        env["PYTHONDONTWRITEBYTECODE"] = "1"  # a same-size edit within a second must not reuse stale bytecode
        env.pop("NNX_BACKEND", None)
        return env

    def check_imports(self) -> None:
        """The copy, not the checkout (nor the editable install), is what tests import."""
        code = "import nnx, nnx.backends.numpy_ops as k; print(nnx.__file__); print(k.__file__)"
        out = subprocess.run([sys.executable, "-c", code], cwd=self.dir, env=self.env("numpy"),
                             capture_output=True, text=True)
        paths = out.stdout.split()
        if out.returncode != 0 or len(paths) != 2 or not all(p.startswith(self.src + os.sep) for p in paths):
            raise SystemExit(f"mutate: the workspace does not import its own copy of nnx:\n{out.stdout}{out.stderr}")


# -- running --------------------------------------------------------------------------------
@dataclass
class Result:
    mutant: Mutant | None
    status: str  # killed / survived / error
    seconds: float
    detail: str = ""
    output: str = field(default="", repr=False)


_FAILED = re.compile(r"^(FAILED|ERROR) (?:tree/)?(\S+)", re.M)
_LIVE: set[subprocess.Popen] = set()  # running pytest processes, killed on Ctrl-C
_LIVE_LOCK = threading.Lock()
_STOPPING = threading.Event()


def kill_live() -> None:
    _STOPPING.set()
    with _LIVE_LOCK:
        for proc in list(_LIVE):
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # the session this tool started for that pytest
            except ProcessLookupError:
                pass


def run_pytest(ws: Workspace, backends: str, timeout: float, extra: list[str]) -> tuple[int | None, str, float]:
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *extra,
           os.path.join(ws.tree, "tests")]
    start = time.monotonic()
    with _LIVE_LOCK:
        if _STOPPING.is_set():
            return None, "interrupted", 0.0
        proc = subprocess.Popen(cmd, cwd=ws.dir, env=ws.env(backends), stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, start_new_session=True)
        _LIVE.add(proc)
    try:
        out, _ = proc.communicate(timeout=timeout)
        return proc.returncode, out, time.monotonic() - start
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the session this Popen started (pytest and its children)
        out, _ = proc.communicate()
        return None, out, time.monotonic() - start
    except BaseException:  # Ctrl-C while waiting: the pytest session must not outlive this tool
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        raise
    finally:
        with _LIVE_LOCK:
            _LIVE.discard(proc)


def first_failure(output: str) -> str:
    m = _FAILED.search(output)
    if m:
        return m.group(2)
    lines = [l for l in output.strip().splitlines() if l.strip()]
    return lines[-1][:120] if lines else ""


def apply(mutant: Mutant, pristine: dict[str, str]) -> dict[str, str]:
    """The mutated text of each file the mutant touches; ValueError when a snippet is stale."""
    texts: dict[str, str] = {}
    for e in mutant.edits:
        text = texts.get(e.file, pristine.get(e.file))
        if text is None:
            raise ValueError(f"{e.file}: no such file")
        n = pristine[e.file].count(e.original)
        if n != 1:
            raise ValueError(f"{e.file}: the original snippet occurs {n} times (expected exactly once): "
                             f"{e.original!r}")
        texts[e.file] = text.replace(e.original, e.replacement, 1)
    for rel, text in texts.items():
        compile(text, rel, "exec")  # a table typo is an error, not a kill
    return texts


def run_mutant(mutant: Mutant, pool: "queue.Queue[Workspace]", pristine: dict[str, str], backends: str,
               timeout: float, extra: list[str]) -> Result:
    try:
        texts = apply(mutant, pristine)
    except (ValueError, SyntaxError) as e:
        return Result(mutant, "error", 0.0, f"bad mutant: {e}")
    ws = pool.get()
    try:
        for rel, text in texts.items():
            ws.write(rel, text)
        rc, out, secs = run_pytest(ws, backends, timeout, extra)
    finally:
        for rel in texts:
            ws.write(rel, pristine[rel])
        pool.put(ws)
    if rc is None:
        return Result(mutant, "error", secs, f"timeout after {timeout:g} s", out)
    if rc == 0:
        return Result(mutant, "survived", secs, "", out)
    if rc in (1, 2):  # tests failed, or collection/import broke because of the mutant
        return Result(mutant, "killed", secs, first_failure(out), out)
    return Result(mutant, "error", secs, f"pytest exit {rc}: {first_failure(out)}", out)


def select(names: list[str] | None) -> list[Mutant]:
    if not names:
        return list(MUTANTS)
    patterns = [p for n in names for p in n.split(",") if p]
    chosen = [m for m in MUTANTS if any(fnmatch.fnmatchcase(m.name, p) for p in patterns)]
    unmatched = [p for p in patterns if not any(fnmatch.fnmatchcase(m.name, p) for m in MUTANTS)]
    if unmatched:
        raise SystemExit(f"mutate: no mutant matches {unmatched}; see --list")
    return chosen


def stale(mutants: list[Mutant], pristine: dict[str, str]) -> list[tuple[Mutant, str]]:
    bad = []
    for m in mutants:
        try:
            apply(m, pristine)
        except (ValueError, SyntaxError) as e:
            bad.append((m, str(e)))
    return bad


def read_files(root: str, rels: set[str]) -> dict[str, str]:
    out = {}
    for rel in rels:
        path = os.path.join(root, rel)
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as f:
                out[rel] = f.read()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backends", default="numpy",
                    help="NNX_TEST_BACKENDS for the suite (default numpy: both numpy configurations)")
    ap.add_argument("--only", action="append", metavar="NAME",
                    help="run only these mutants (names or fnmatch patterns; repeat or comma-separate)")
    ap.add_argument("--list", action="store_true", help="list the mutants and check their snippets; run nothing")
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds per mutant (default 300)")
    ap.add_argument("--jobs", type=int, default=MAX_JOBS, help=f"mutants at once (at most {MAX_JOBS})")
    ap.add_argument("--no-baseline", action="store_true", help="skip the unmutated run")
    ap.add_argument("--keep", action="store_true", help="keep the workspaces (printed) for inspection")
    ap.add_argument("--verbose", "-v", action="store_true", help="print the pytest output of survivors and errors")
    ap.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after --)")
    args = ap.parse_args(argv)
    mutants = select(args.only)
    files = {e.file for m in MUTANTS for e in m.edits}

    if args.list:
        pristine = read_files(ROOT, files)
        bad = dict((m.name, why) for m, why in stale(mutants, pristine))
        width = max(len(m.name) for m in mutants)
        for m in mutants:
            where = ", ".join(dict.fromkeys(e.file for e in m.edits))
            print(f"{m.name:<{width}}  {'STALE' if m.name in bad else 'ok':<5}  {where:<22}  {m.bug}")
            if m.name in bad:
                print(f"{'':<{width}}         {bad[m.name]}")
        print(f"{len(mutants)} mutants, {len(bad)} stale")
        return 2 if bad else 0

    jobs = max(1, min(args.jobs, MAX_JOBS, len(mutants)))
    base = tempfile.mkdtemp(prefix="nnx-mutate-")
    start = time.monotonic()
    try:
        tree = snapshot_files(ROOT)
        workspaces = [Workspace(base, tree, ROOT, i) for i in range(jobs)]
        # the snapshot, not the live checkout, is what every mutant starts from
        pristine = read_files(workspaces[0].tree, files)
        bad = stale(mutants, pristine)
        if bad:
            print("mutate: stale mutants (their original snippet is not in the code exactly once); "
                  "update the table in tools/mutate.py:", file=sys.stderr)
            for m, why in bad:
                print(f"  {m.name}: {why}", file=sys.stderr)
            return 2
        workspaces[0].check_imports()
        print(f"mutate: {len(mutants)} mutants, backends {args.backends!r}, {jobs} at a time, "
              f"timeout {args.timeout:g} s, workspaces in {base}", flush=True)
        if not args.no_baseline:
            rc, out, secs = run_pytest(workspaces[0], args.backends, args.timeout, args.pytest_args)
            if rc != 0:
                print(out[-4000:])
                print(f"mutate: the unmutated suite does not pass (exit {rc}, {secs:.0f} s): "
                      f"{first_failure(out)}; fix it before mutating.", file=sys.stderr)
                return 2
            summary = out.strip().splitlines()[-1] if out.strip() else ""
            print(f"baseline: passed in {secs:.1f} s ({summary})", flush=True)
        pool: queue.Queue[Workspace] = queue.Queue()
        for ws in workspaces:
            pool.put(ws)
        results: dict[str, Result] = {}
        lock = threading.Lock()

        def one(m: Mutant) -> Result:
            r = run_mutant(m, pool, pristine, args.backends, args.timeout, args.pytest_args)
            with lock:
                results[m.name] = r
                print(f"[{len(results):>2}/{len(mutants)}] {r.status:<8} {m.name:<36} {r.seconds:6.1f} s  "
                      f"{r.detail}", flush=True)
            return r

        ex = ThreadPoolExecutor(max_workers=jobs)
        futures = [ex.submit(one, m) for m in mutants]
        try:
            for f in futures:
                f.result()
        except KeyboardInterrupt:
            kill_live()
            ex.shutdown(wait=True, cancel_futures=True)
            print("mutate: interrupted", file=sys.stderr)
            return 130
        ex.shutdown()
    except KeyboardInterrupt:
        kill_live()
        print("mutate: interrupted", file=sys.stderr)
        return 130
    finally:
        if args.keep:
            print(f"mutate: workspaces kept in {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)

    ordered = [results[m.name] for m in mutants]
    killed = sum(r.status == "killed" for r in ordered)
    survived = [r for r in ordered if r.status == "survived"]
    errors = [r for r in ordered if r.status == "error"]
    width = max(len(m.name) for m in mutants)
    print()
    print(f"{'mutant':<{width}}  {'status':<8}  {'time':>7}  killed by / detail")
    print(f"{'-' * width}  {'-' * 8}  {'-' * 7}  {'-' * 40}")
    for r in ordered:
        print(f"{r.mutant.name:<{width}}  {r.status:<8}  {r.seconds:6.1f}s  {r.detail}")
    print()
    print(f"score: {killed}/{len(mutants)} killed, {len(survived)} survived, {len(errors)} errors "
          f"({time.monotonic() - start:.0f} s)")
    for r in survived:
        print(f"  survived {r.mutant.name}: {r.mutant.bug}\n    a test that would kill it: {r.mutant.killer}")
    for r in errors:
        print(f"  error {r.mutant.name}: {r.detail}")
    if args.verbose:
        for r in survived + errors:
            print(f"\n===== {r.mutant.name} ({r.status}) =====\n{r.output[-3000:]}")
    return 1 if survived else 2 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
