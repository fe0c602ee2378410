from cargo_agent.cli import launch

if __name__ == "__main__":
    launch()
