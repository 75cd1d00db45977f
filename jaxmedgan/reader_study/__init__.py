"""Reader study: radiologists tell real from synthetic images in a browser.

`study.create_study` builds the study folder, `app.create_app` / `app.serve` run the web page,
`report.write_report` computes accuracy, sensitivity, specificity, binomial tests and kappas;
`cli.main` is `jaxmedgan reader-study create|serve|report`.
"""
