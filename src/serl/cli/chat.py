"""`serl chat`: answer one prompt with a model, as a smoke check of the model path."""

from __future__ import annotations

import typer

from serl.cli.app import app


@app.command()
def chat(
    question: str = typer.Argument(..., help="The question to answer."),
    model: str = typer.Option("embedded:smollm2-135m", "--model", "-m", help="Model spec (see `serl.models`)."),
    max_new_tokens: int = typer.Option(256, help="Token budget for the answer."),
) -> None:
    """Answer QUESTION with the model's chat template, greedy decoding."""
    import torch

    from serl.models import ModelSpecError, load_policy

    try:
        model_obj, tokenizer = load_policy(model)
    except ModelSpecError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from err
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": question}], add_generation_prompt=True, tokenize=False
    )
    inputs = tokenizer(text, return_tensors="pt", add_special_tokens=False)
    with torch.inference_mode():
        out = model_obj.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    typer.echo(tokenizer.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True).strip())
