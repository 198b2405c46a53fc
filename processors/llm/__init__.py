"""Language models behind an OpenAI-compatible server: the tagger's and captioner's LLM.

Production runs vLLM (an instruction model such as Mistral-7B-Instruct on GPUs, in its own
service); tests, CI and the demo run llama.cpp's server with Gemma 3 270M from a PyPI
package. Both speak the same protocol, so the stages hold one client
(:mod:`deeptrust.processors.llm.client`) and never load the model themselves.
"""
