"""A seeded synthetic routing benchmark with known ground-truth expected rewards.

Prompts are short texts in several categories at three difficulty levels, written so that a
sentence encoder can tell both apart. Each simulated LLM has a skill per category and a
sensitivity to difficulty; its true expected reward on a prompt is

    ER_i(x) = skill[i, category(x)] - sensitivity[i] * difficulty(x) + quirk_i(x),

with a small prompt-specific quirk, and each of the K samples is ER_i(x) plus Gaussian noise (a
reward model's score of one sampled response). Dearer LLMs are better, mostly on hard prompts,
and two mid-priced specialists beat the generalists in their own categories, so routing pays.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from erpjax.data import RewardSamples, RoutingDataset

CATEGORIES = ("math", "code", "history", "poetry", "chemistry", "cooking")

_SUBJECTS = {
    "math": ("the sum of {a} and {b}", "{a} multiplied by {b}", "the derivative of x^{a}",
             "the greatest common divisor of {a} and {b}", "the integral of x^{a} from 0 to {b}",
             "whether {a} is a prime number"),
    "code": ("a Python function that reverses a list of {a} items",
             "a SQL query that finds the top {a} customers", "a regular expression for dates",
             "a binary search over a sorted array", "a thread-safe queue with {a} producers",
             "a parser for arithmetic expressions"),
    "history": ("the causes of the French Revolution", "the fall of the Roman Empire",
                "the industrial revolution in Britain", "the Cold War between {a} and {b}",
                "the Ming dynasty's maritime voyages", "the printing press in Europe"),
    "poetry": ("a haiku about autumn leaves", "a sonnet about the sea",
               "a limerick about a cat named {a}", "a free verse poem about city lights",
               "a ballad about a lighthouse keeper", "an ode to morning coffee"),
    "chemistry": ("the balancing of the combustion of methane", "why salt dissolves in water",
                  "the pH of a {a} millimolar acid solution", "covalent and ionic bonds",
                  "the mechanism of an SN2 reaction", "the half-life of a sample after {a} days"),
    "cooking": ("a recipe for tomato soup for {a} people", "how to bake sourdough bread",
                "a vegetarian lasagna", "how to sear a steak", "a three-course dinner menu",
                "how to make fresh pasta with {a} eggs"),
}
_VERBS = {
    "math": "Compute", "code": "Write", "history": "Explain", "poetry": "Write",
    "chemistry": "Explain", "cooking": "Describe",
}
_DIFFICULTY = (
    ("Quick question:", "Keep it short."),
    ("Please help:", "Explain your reasoning step by step."),
    ("Expert-level task:",
     "Be rigorous and complete, cover every edge case, and justify each step in depth."),
)

# name, cost per call (US$), skill per category (same order as CATEGORIES), difficulty sensitivity.
_LLMS = (
    ("tiny-1b", 0.0001, (0.2, 0.0, 0.3, 0.4, 0.1, 0.5), 1.2),
    ("small-8b", 0.0003, (0.6, 0.5, 0.7, 0.8, 0.5, 0.9), 1.0),
    ("coder-15b", 0.0008, (1.0, 2.6, 0.5, 0.3, 0.8, 0.4), 0.45),
    ("writer-13b", 0.0007, (0.4, 0.3, 2.0, 2.5, 0.5, 1.3), 0.5),
    ("large-70b", 0.0020, (1.3, 1.4, 1.4, 1.4, 1.3, 1.3), 0.5),
    ("frontier", 0.0060, (1.8, 1.9, 1.7, 1.6, 1.8, 1.5), 0.25),
)


@dataclasses.dataclass(frozen=True)
class SyntheticBenchmark:
  """Train and test splits with the true expected rewards [N, M] of each."""

  train: RoutingDataset
  test: RoutingDataset
  train_true: np.ndarray
  test_true: np.ndarray


def _prompts(rng: np.random.Generator, n: int) -> tuple[list[str], list[str], np.ndarray]:
  """n prompt texts, their categories and difficulty levels [n] in {0, 1, 2}."""
  texts, categories = [], []
  difficulty = rng.integers(0, 3, size=n)
  for level in difficulty:
    category = CATEGORIES[rng.integers(len(CATEGORIES))]
    subject = _SUBJECTS[category][rng.integers(len(_SUBJECTS[category]))]
    subject = subject.format(a=rng.integers(2, 99), b=rng.integers(2, 99))
    opener, closer = _DIFFICULTY[level]
    texts.append(f"{opener} {_VERBS[category]} {subject}. {closer}")
    categories.append(category)
  return texts, categories, difficulty


def _split(prompt_rng, noise_rng, name, n, k, noise, id_offset):
  texts, categories, difficulty = _prompts(prompt_rng, n)
  skill = np.array([llm[2] for llm in _LLMS])  # [M, C]
  sensitivity = np.array([llm[3] for llm in _LLMS])  # [M]
  category_index = np.array([CATEGORIES.index(c) for c in categories])
  quirk = prompt_rng.normal(scale=0.1, size=(n, len(_LLMS)))
  true = skill[:, category_index].T - difficulty[:, None] * sensitivity[None, :] + quirk  # [N, M]
  prompt_index = np.repeat(np.arange(n), len(_LLMS) * k)
  llm_index = np.tile(np.repeat(np.arange(len(_LLMS)), k), n)
  reward = true[prompt_index, llm_index] + noise_rng.normal(scale=noise, size=len(prompt_index))
  costs = np.array([llm[1] for llm in _LLMS])
  dataset = RoutingDataset(
      name=f"synthetic/{name}",
      prompt_ids=tuple(f"{name}-{id_offset + i:06d}" for i in range(n)),
      prompts=tuple(texts),
      categories=tuple(categories),
      llms=tuple(llm[0] for llm in _LLMS),
      costs=costs,
      reward_models=("synthetic-rm",),
      samples=RewardSamples.build(prompt_index, llm_index, reward, cost=costs[llm_index]),
  )
  return dataset, true


def make_synthetic_benchmark(
    *, num_train: int = 1200, num_test: int = 400, samples_per_prompt: int = 8,
    noise: float = 0.8, seed: int = 0,
) -> SyntheticBenchmark:
  """The seeded benchmark: `samples_per_prompt` (K) noisy rewards per (prompt, LLM).

  Args:
    num_train, num_test: prompts per split.
    samples_per_prompt: K, the responses sampled per prompt and LLM.
    noise: standard deviation of one sample's reward around the expected reward.
    seed: everything (prompts, quirks, noise) is a function of the seed; prompts and true
      expected rewards do not depend on K or the noise level.
  """
  if samples_per_prompt < 1:
    raise ValueError(f"samples_per_prompt must be >= 1, got {samples_per_prompt}")
  # Prompts and true expected rewards come from one stream and sample noise from another, so
  # changing K changes only the samples, never the prompts.
  prompt_rng = np.random.default_rng([seed, 0])
  noise_rng = np.random.default_rng([seed, 1])
  train, train_true = _split(
      prompt_rng, noise_rng, "train", num_train, samples_per_prompt, noise, 0)
  test, test_true = _split(prompt_rng, noise_rng, "test", num_test, samples_per_prompt, noise,
                           num_train)
  return SyntheticBenchmark(train=train, test=test, train_true=train_true, test_true=test_true)
